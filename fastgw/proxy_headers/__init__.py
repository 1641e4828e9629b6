"""Header rewriting between client and upstream, in both directions. Pure bytes in, bytes out; the
per-request modules are compiled (fastgw/native.py COMPILED).

One module per concept: ``hop_by_hop`` (fields that never cross a proxy, field-line rendering, trailers),
``request_ids`` (request ids and ``traceparent``), ``request_head`` (client to upstream), ``response_head``
(upstream to client, HTTP/1 and HTTP/2) and ``answer`` (the headers of a response the gateway makes
itself: a Denial, an upstream failure, a codec error).
"""
