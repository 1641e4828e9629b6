"""``fastgw cert dev``: development certificates (a local CA, a localhost server, an mTLS client)."""

from __future__ import annotations

import argparse


def dev(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fastgw.tls.dev_certs import write_dev_certificates

    directory = args.dir
    out = write_dev_certificates(Path(directory))
    print(f"""wrote development certificates to {directory}/ (for this machine only, never for production):
  CA             {out.ca_cert}  (key {out.ca_key})
  server         {out.server_cert}  (key {out.server_key}), valid for localhost, 127.0.0.1 and ::1
  client (mTLS)  {out.client_cert}  (key {out.client_key})

Use them in a listener:
  [[listeners]]
  bind = "127.0.0.1:8443"
  tls = {{ certificates = [{{ cert = "{out.server_cert}", key = "{out.server_key}" }}] }}

Trust the CA per command:   curl --cacert {out.ca_cert} https://localhost:8443/
or system-wide (Debian):    cp {out.ca_cert} /usr/local/share/ca-certificates/fastgw-dev.crt
                            update-ca-certificates""")
    return 0
