"""Azure IoT Hub's own device SDK (azure-iot-device, PyPI) doing what gps-agent does: connect
with the device key, send one telemetry message (JSON, utf-8), listen for direct methods, and
report the state to the twin. Run by tests/profile_sdk.rs against mosquitto on
localhost:8883 (the SDK's fixed port), whose log is compared with the agent's. mosquitto
never answers the twin request, so that call runs in a thread the script does not wait for.
Usage: azure_device.py CA_FILE DEVICE KEY_BASE64"""
import json
import os
import sys
import threading
import time

from azure.iot.device import IoTHubDeviceClient, Message

ca_file, device, key = sys.argv[1], sys.argv[2], sys.argv[3]
client = IoTHubDeviceClient.create_from_connection_string(
    f"HostName=localhost;DeviceId={device};SharedAccessKey={key}",
    server_verification_cert=open(ca_file).read(),
    connection_retry=False,
)
client.connect()
client.send_message(
    Message(json.dumps({"v": 1}), content_encoding="utf-8", content_type="application/json")
)
client.on_method_request_received = lambda request: None
threading.Thread(
    target=client.patch_twin_reported_properties, args=({"state": "online"},), daemon=True
).start()
time.sleep(1.5)
try:
    client.shutdown()
finally:
    # The SDK's background threads may still complain about the twin request mosquitto never
    # answered; what the broker saw is all the test reads.
    os._exit(0)
