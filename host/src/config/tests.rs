use super::*;

const DEV: &str = r#"
[enclave]
mode = "development"
[enclave.development]
binary = "bin/enclave"
config = "enclave.toml"
socket = "run/enclave.sock"

[[forward]]
listen = "127.0.0.1:8443"
enclave_port = 5000

[[relay]]
port = 8001
target = "broker.example:9443"

[admin]
listen = "127.0.0.1:9100"
"#;

const NITRO: &str = r#"
[enclave]
mode = "nitro"
ready_timeout = "2m"
[enclave.nitro]
eif = "/opt/enclave.eif"
cpu_count = 2
memory_mib = 4096
"#;

#[test]
fn a_development_configuration_resolves_paths_and_defaults() {
    let config = HostConfig::from_toml(DEV, Path::new("/srv")).unwrap();
    assert_eq!(
        config.enclave.launch,
        Launch::Development {
            binary: PathBuf::from("/srv/bin/enclave"),
            config: PathBuf::from("/srv/enclave.toml"),
            socket: PathBuf::from("/srv/run/enclave.sock"),
        }
    );
    assert_eq!(config.enclave.health_port, 5001);
    assert_eq!(config.enclave.ready_timeout, Duration::from_secs(30));
    assert_eq!(config.forwards.len(), 1);
    assert_eq!(
        config.forwards[0].max_connections, 64,
        "no more than the enclave serves on a port by default"
    );
    assert_eq!(config.relays[0].target, "broker.example:9443");
    assert_eq!(config.admin, Some("127.0.0.1:9100".parse().unwrap()));
    assert_eq!(config.shutdown_grace, Duration::from_secs(10));
}

#[test]
fn a_nitro_configuration_reads_its_settings() {
    let config = HostConfig::from_toml(NITRO, Path::new("/")).unwrap();
    let Launch::Nitro(nitro) = &config.enclave.launch else {
        panic!("not nitro")
    };
    assert_eq!(nitro.cpu_count, 2);
    assert_eq!(nitro.memory_mib, 4096);
    assert_eq!(nitro.nitro_cli, PathBuf::from("nitro-cli"));
    assert!(!nitro.debug_mode);
    assert_eq!(config.enclave.ready_timeout, Duration::from_secs(120));
    assert!(config.forwards.is_empty() && config.relays.is_empty() && config.admin.is_none());
}

const EMULATOR: &str = r#"
[enclave]
mode = "emulator"
[enclave.emulator]
qemu = "qemu/bin/qemu-system-x86_64"
firmware = "qemu/share/firmware"
vhost_device_vsock = "vhost-device-vsock"
eif = "enclave.eif"
socket = "run/enclave.sock"
console = "console.log"
"#;

#[test]
fn an_emulator_configuration_resolves_paths_and_defaults() {
    let config = HostConfig::from_toml(EMULATOR, Path::new("/srv")).unwrap();
    let Launch::Emulator(e) = config.enclave.launch else {
        panic!("not the emulator: {:?}", config.enclave.launch);
    };
    assert_eq!(e.eif, PathBuf::from("/srv/enclave.eif"));
    assert_eq!(e.socket, PathBuf::from("/srv/run/enclave.sock"));
    assert_eq!(e.console, Some(PathBuf::from("/srv/console.log")));
    assert_eq!((e.cpu_count, e.memory_mib), (2, 1024));
    for (text, field) in [
        (
            EMULATOR.replace("enclave.eif", "a,b.eif"),
            "enclave.emulator.eif",
        ),
        (
            EMULATOR.replace("run/enclave.sock", "run/x,id=y"),
            "enclave.emulator.socket",
        ),
        (
            EMULATOR.replace("console = ", "cpu_count = 0\nconsole = "),
            "enclave.emulator.cpu_count",
        ),
        (
            format!("{EMULATOR}\n[enclave.nitro]\neif = \"x\"\ncpu_count = 2\nmemory_mib = 512\n"),
            "enclave.nitro",
        ),
        (
            EMULATOR.replace("mode = \"emulator\"", "mode = \"development\""),
            "enclave.emulator",
        ),
        // Port 9000 is where the boot heartbeat arrives.
        (
            format!("{EMULATOR}\n[[relay]]\nport = 9000\ntarget = \"b.example:1\"\n"),
            "relay[0].port",
        ),
    ] {
        let error = HostConfig::from_toml(&text, Path::new("/srv"))
            .unwrap_err()
            .to_string();
        assert!(error.contains(field), "{field}: {error}");
    }
}

#[test]
fn mistakes_are_refused_by_name() {
    let cases = [
        (DEV.replace("[admin]", "[admn]"), "admn"),
        (
            DEV.replace("mode = \"development\"", "mode = \"cloud\""),
            "enclave.mode",
        ),
        (
            DEV.replace("127.0.0.1:8443", "localhost"),
            "forward[0].listen",
        ),
        (
            DEV.replace("broker.example:9443", "broker.example"),
            "relay[0].target",
        ),
        (
            DEV.replace("broker.example:9443", "broker.example:0"),
            "relay[0].target",
        ),
        (
            format!("{DEV}\n[[relay]]\nport = 8001\ntarget = \"other.example:1\"\n"),
            "relay[1].port",
        ),
        (
            DEV.replace("enclave_port = 5000", "enclave_port = 4294967295"),
            "enclave_port",
        ),
        (
            format!("{DEV}\n[[forward]]\nlisten = \"[::1]:8443\"\nenclave_port = 5000\n"),
            "forward[1].enclave_port",
        ),
        // The health port is the host's own: forwarding clients to it would let them crowd the
        // probes out.
        (
            DEV.replace("enclave_port = 5000", "enclave_port = 5001"),
            "forward[0].enclave_port",
        ),
        (
            DEV.replace(
                "mode = \"development\"",
                "mode = \"development\"\nhealth_port = 5000",
            ),
            "forward[0].enclave_port",
        ),
        (
            DEV.replace("[[forward]]", "[[forward]]\nidle_timeout = \"0s\""),
            "forward[0].idle_timeout",
        ),
        (NITRO.replace("cpu_count = 2", "cpu_count = 0"), "cpu_count"),
        (
            NITRO.replace("memory_mib = 4096", "memory_mib = 4096\ncid = 3"),
            "cid",
        ),
        (
            format!("{NITRO}\n[enclave.development]\nconfig = \"a\"\nsocket = \"b\"\n"),
            "enclave.development",
        ),
        (
            NITRO.replace(
                "ready_timeout = \"2m\"",
                "restart_backoff = \"10s\"\nrestart_backoff_max = \"1s\"",
            ),
            "restart_backoff_max",
        ),
    ];
    for (text, named) in cases {
        let error = HostConfig::from_toml(&text, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(error.contains(named), "expected `{named}` in: {error}");
    }
}
