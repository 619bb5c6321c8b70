"""ThingsBoard's own device SDK (tb-mqtt-client, PyPI) doing what gps-agent does: connect with
the access token, send one telemetry point and the state as client attributes. Run by
tests/profile_sdk.rs against mosquitto, whose log is compared with the agent's.
Usage: thingsboard_device.py HOST PORT TOKEN"""
import sys
import time

from tb_device_mqtt import TBDeviceMqttClient

host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = TBDeviceMqttClient(host, port=port, username=token)
client.connect()
client.send_telemetry(
    [{"ts": 1584538100000, "values": {"latitude": 41.574970205, "longitude": -93.750558641}}]
).get()
client.send_attributes({"state": "online"}).get()
time.sleep(0.5)
client.disconnect()
