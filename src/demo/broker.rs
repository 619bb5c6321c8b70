//! The demo's embedded MQTT broker (rumqttd) on a free loopback port.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Start rumqttd on a free loopback port; returns its address once it accepts connections.
pub fn start() -> Result<SocketAddr, String> {
    for _ in 0..3 {
        let addr = free_port()?;
        let mut broker = rumqttd::Broker::new(config(addr)?);
        std::thread::Builder::new()
            .name("demo-broker".into())
            .spawn(move || {
                let _ = broker.start();
            })
            .map_err(|e| format!("cannot start the broker thread: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Err("the embedded broker did not start".into())
}

/// A loopback port nobody listens on right now (rumqttd cannot report a port 0 back).
pub fn free_port() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free loopback port: {e}"))
}

fn config(addr: SocketAddr) -> Result<rumqttd::Config, String> {
    let text = format!(
        r#"
        id = 0
        [router]
        max_connections = 100
        max_outgoing_packet_count = 200
        max_segment_size = 10485760
        max_segment_count = 10

        [v4.1]
        name = "v4-demo"
        listen = "{addr}"
        next_connection_delay_ms = 1
        [v4.1.connections]
        connection_timeout_ms = 5000
        max_payload_size = 1048576
        max_inflight_count = 100
        dynamic_filters = true
        "#
    );
    toml::from_str(&text).map_err(|e| format!("broker config: {e}"))
}
