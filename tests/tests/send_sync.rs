//! Types shared across tasks are `Send + Sync`, checked at compile time.

fn send_sync<T: Send + Sync>() {}

#[test]
fn shared_types_are_send_and_sync() {
    send_sync::<attest::Verifier>();
    send_sync::<protocol::wire::Request>();
    send_sync::<protocol::wire::Response>();
    send_sync::<enclave::Service>();
    send_sync::<enclave::NitroNsm>();
    send_sync::<enclave::SimulatedNsm>();
    send_sync::<enclave::Config>();
    send_sync::<transport::Endpoint>();
    send_sync::<transport::HybridVsock>();
    send_sync::<transport::Vsock>();
}
