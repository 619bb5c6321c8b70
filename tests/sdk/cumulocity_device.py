"""Cumulocity's own device agent (c8ydm, the DM reference agent, PyPI) started as its
`c8ydm.start` starts it, with pre-provisioned device credentials (no bootstrap), until it has
announced itself: device creation, supported operations, its start event, its subscriptions.
Then stopped as on SIGTERM (its stop event, DISCONNECT). Run by tests/profile_sdk.rs against
mosquitto, whose log (and a subscriber on s/#) is compared with the agent's.

Two things differ from a device on a tenant, both because a local broker is not a tenant:
- c8ydm also calls the tenant's REST API (the device's internal id, operations left
  EXECUTING, the software list) at https://{its MQTT host}. A small stub here answers those
  calls with canned JSON, on plain HTTP, and the agent's REST client is pointed at it (the
  one attribute set on c8ydm's objects). Without answers, c8ydm fails at the end of its start
  (`len(None)` on the operations it could not fetch) and reconnects every 5 s.
- c8ydm asks https://ipapi.co for its position (a `402` line when it answers). HTTPS goes
  through the stub as a proxy that refuses, so the test never leaves this machine; no 402.

Usage: cumulocity_device.py HOST PORT TENANT USER PASSWORD SERIAL"""
import atexit
import http.server
import json
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import threading

host, port, tenant, user, password, serial = sys.argv[1:7]
operations_asked = threading.Event()


class TenantStub(http.server.BaseHTTPRequestHandler):
    """The REST calls c8ydm makes at start, answered as a tenant would (rest_client.py)."""

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/identity/externalIds/c8y_Serial/"):
            self.answer(200, {"managedObject": {"id": "4711"}})
        elif self.path.startswith("/devicecontrol/operations"):
            self.answer(200, {"operations": []})
            operations_asked.set()
        else:
            self.answer(404, {"error": "not in this stub"})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.answer(201, {"id": "4712", "self": "http://stub/4712"})

    do_PUT = do_POST

    def do_CONNECT(self):
        self.send_response(403)
        self.end_headers()

    def log_message(self, fmt, *args):
        logging.info("REST stub: " + fmt, *args)


logging.basicConfig(level=logging.INFO, stream=sys.stderr)
stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TenantStub)
threading.Thread(target=stub.serve_forever, daemon=True).start()
stub_url = f"http://127.0.0.1:{stub.server_address[1]}"
for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(name, None)
os.environ["HTTPS_PROXY"] = os.environ["https_proxy"] = stub_url
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

# Its home: ~/.cumulocity/agent.ini, as its README's reference agent.ini, with the
# credentials a device gets from bootstrapping already in [secret].
home = pathlib.Path(tempfile.mkdtemp(prefix="c8ydm-"))
atexit.register(shutil.rmtree, home, True)
os.environ["HOME"] = str(home)
path = home / ".cumulocity"
path.mkdir()
(path / "agent.ini").write_text(
    f"""[mqtt]
url = {host}
port = {port}
tls = false
cert_auth = false
ping.interval.seconds = 60

[agent]
name = dm-example-device
type = c8y_dm_example_device
main.loop.interval.seconds = 10
requiredinterval = 10
loglevel = INFO
device.id = {serial}

[secret]
c8y.tenant = {tenant}
c8y.username = {user}
c8y.password = {password}
"""
)

from c8ydm.client import Agent  # noqa: E402 (reads HOME and the proxies above)
from c8ydm.utils import Configuration  # noqa: E402

# What c8ydm.main.start does once it has credentials, without its pid file and log files.
config = Configuration(str(path))
agent = Agent(serial, path, config, str(path / "agent.pid"), False)
agent.rest_client.base_url = stub_url
threading.Thread(target=agent.run, daemon=True).start()
if not operations_asked.wait(60):
    sys.exit("c8ydm did not finish its start within 60 s (see its log above)")
# Its initializers run in threads of their own: let each say what it says at start.
for thread in threading.enumerate():
    if thread.name.startswith("InitializerThread-"):
        thread.join(60)
agent.stop()
