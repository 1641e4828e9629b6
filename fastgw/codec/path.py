"""Request-path normalisation, done once per request before routing (RFC 3986 6.2.2, 5.2.4).

The path a route matched is exactly the path sent upstream: routing a normalised path and forwarding
the raw one is how ``/public/..%2fadmin`` reaches an admin endpoint. Rules, in order:

1. percent-encoded unreserved characters are decoded (``%7E`` -> ``~``, ``%2e`` -> ``.``), other escapes
   are kept with upper-case hex; malformed escapes are refused;
2. encoded ``/`` and ``\\`` are refused unless the config allows them (then kept encoded), an encoded or
   raw NUL and a raw ``\\`` are always refused (back-ends disagree about what they mean);
3. dot segments are removed, and a dot segment with parameters (``..;``, Tomcat's path-parameter trick)
   is refused;
4. repeated slashes are merged when ``merge_slashes`` is on (the default).

Matching is case-sensitive; nothing here changes letter case outside escapes.
"""

from __future__ import annotations

from typing import Final

from fastgw.codec.problem import CodecError

_UNRESERVED: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")


def _bad(detail: str) -> CodecError:
    return CodecError(400, "bad-path", detail)


def normalize_path(
    path: bytes, *, merge_slashes: bool = True, allow_encoded_slash: bool = False, allow_params: bool = False
) -> bytes:
    """Return the normalised form of an origin-form path (no query string).

    Raises:
        CodecError: 400 for a malformed escape, a refused character or a parameterised dot segment.
    """
    # Fast path: the common clean path contains none of the bytes that normalisation acts on.
    if (
        b"%" not in path
        and b"/." not in path
        and b"//" not in path
        and b"\\" not in path
        and b"\x00" not in path
        and b";" not in path
    ):
        return path
    if b"\\" in path or b"\x00" in path:
        raise _bad("backslash or NUL in path")
    if not allow_params and (b";" in path or b"%3b" in path.lower()):
        # "/admin;x" is "/admin" to Tomcat, Spring and Jetty: routed as something else here, it would walk
        # past /admin's rules. Refused unless server.allow_path_params says the upstreams need them.
        raise _bad("path parameters (';') are not accepted")
    if b"%" in path:
        path = _decode_unreserved(path, allow_encoded_slash)
    segments = path.split(b"/")
    out: list[bytes] = []
    for seg in segments[1:]:
        if seg == b"..":
            if out:
                out.pop()
        elif seg == b"." or (not seg and merge_slashes):
            continue
        else:
            if b";" in seg and seg.split(b";", 1)[0] in (b".", b".."):
                raise _bad("dot segment with parameters in path")
            out.append(seg)
    last = segments[-1]
    trailing = len(segments) > 1 and (last in (b".", b"..") or (not last and merge_slashes))
    result = b"/" + b"/".join(out)
    if trailing and out:
        result += b"/"
    return result


def _decode_unreserved(path: bytes, allow_encoded_slash: bool) -> bytes:
    pieces = path.split(b"%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if len(piece) < 2 or piece[0] not in _HEX or piece[1] not in _HEX:
            raise _bad("malformed percent-encoding in path")
        code = int(piece[:2], 16)
        if code in _UNRESERVED:
            out.append(bytes((code,)))
        elif code in (0x2F, 0x5C):
            if not allow_encoded_slash:
                raise _bad("encoded '/' or '\\' in path")
            out.append(b"%" + piece[:2].upper())
        elif code == 0:
            raise _bad("encoded NUL in path")
        else:
            out.append(b"%" + piece[:2].upper())
        out.append(piece[2:])
    return b"".join(out)
