"""AWS IoT Core's own device SDK (awsiotsdk, PyPI) doing what gps-agent does: connect with the
device certificate as the thing, publish one message at QoS 1. Run by tests/profile_sdk.rs
against mosquitto with mutual TLS, whose log is compared with the agent's.
Usage: aws_device.py HOST PORT CERT KEY CA THING"""
import sys

from awscrt import mqtt
from awsiot import mqtt_connection_builder

host, port, cert, key, ca, thing = sys.argv[1:7]
connection = mqtt_connection_builder.mtls_from_path(
    endpoint=host,
    port=int(port),
    cert_filepath=cert,
    pri_key_filepath=key,
    ca_filepath=ca,
    client_id=thing,
)
connection.connect().result(10)
publish, _ = connection.publish(
    topic=f"fleet/{thing}/fixes", payload=b'{"v":1}', qos=mqtt.QoS.AT_LEAST_ONCE
)
publish.result(10)
connection.disconnect().result(10)
