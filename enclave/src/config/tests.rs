use std::path::PathBuf;

use super::*;

/// A directory of the test's own holding a root certificate: tests run side by side, and one
/// rewriting another's file made it read a partial one.
fn dev_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("enclave-config-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = attest::aws_nitro_root_g1();
    std::fs::write(dir.join("root.der"), root.as_ref()).unwrap();
    dir
}

#[test]
fn an_empty_file_means_the_embedded_defaults() {
    let config = Config::from_toml("", Path::new("/")).unwrap();
    assert_eq!(config, Config::embedded_default());
    assert_eq!(config.listen.to_string(), "vsock");
    assert_eq!(config.control_port, 5000);
    assert_eq!(config.health_port, 5001);
    assert_eq!(config.nsm, NsmConfig::Nitro);
}

#[test]
fn unknown_keys_and_bad_values_are_refused_by_name() {
    let cases = [
        ("lisen = \"vsock\"", "lisen"),
        ("listen = \"tcp:1.2.3.4\"", "listen"),
        ("control_port = 4294967295", "control_port"),
        ("health_port = 4294967295", "health_port"),
        ("health_port = 5000", "health_port"),
        ("control_port = 5001", "health_port"),
        ("max_connections = 0", "max_connections"),
        ("idle_timeout = \"0s\"", "idle_timeout"),
        ("idle_timeout = \"soon\"", "idle_timeout"),
        ("[nsm]\nkind = \"tpm\"", "nsm.kind"),
        ("[nsm]\nkind = \"nitro\"\nregion = \"eu-west-1\"", "region"),
        ("[nsm]\nkind = \"simulated\"", "nsm.root_certificate"),
        ("[nsm]\nkind = \"nitro\"\nsecret = 1", "secret"),
    ];
    for (text, named) in cases {
        let error = Config::from_toml(text, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(error.contains(named), "{text:?}: {error}");
    }
}

#[test]
fn simulated_paths_are_relative_to_the_file() {
    let dir = dev_dir("simulated");
    let text = "listen = \"unix:/tmp/e.sock\"\n[nsm]\nkind = \"simulated\"\n\
                root_certificate = \"root.der\"\nroot_key = \"root.key\"\nregion = \"ap-south-1\"\n";
    let config = Config::from_toml(text, &dir).unwrap();
    let NsmConfig::Simulated(sim) = &config.nsm else {
        panic!("not simulated")
    };
    assert_eq!(sim.root_certificate, dir.join("root.der"));
    assert_eq!(sim.root_key, dir.join("root.key"));
    assert_eq!(sim.region.as_str(), "ap-south-1");
    assert!(config.canonical().contains("nsm.kind = simulated"));
    assert!(
        !config.canonical().contains("root.der"),
        "files are measured by digest"
    );

    let missing = text.replace("root.der", "absent.der");
    assert!(matches!(
        Config::from_toml(&missing, &dir),
        Err(ConfigError::Read(scaffold::ReadError::Io { .. }))
    ));
}

#[test]
fn the_emulator_nsm_takes_a_root_and_never_measurements() {
    let dir = dev_dir("emulator");
    let text = "listen = \"vsock\"\n[nsm]\nkind = \"emulator\"\n\
                root_certificate = \"root.der\"\nroot_key = \"root.key\"\n";
    let config = Config::from_toml(text, &dir).unwrap();
    let NsmConfig::Emulator(sim) = &config.nsm else {
        panic!("not the emulator's NSM")
    };
    assert_eq!(sim.root_key, dir.join("root.key"));
    assert_eq!((sim.boot_pcrs, sim.pcr8), (None, None));
    assert!(config.nsm.is_development());
    assert!(config.canonical().contains("nsm.kind = emulator"));
    // Another kind, another measurement.
    let simulated = Config::from_toml(&text.replace("emulator", "simulated"), &dir).unwrap();
    assert_ne!(config.digest(), simulated.digest());
    // The emulator reports what QEMU measured: no measurement may be configured.
    let pcr = "0".repeat(96);
    for extra in [
        format!("pcr0 = \"{pcr}\"\npcr1 = \"{pcr}\"\npcr2 = \"{pcr}\"\n"),
        "image = \"enclave.eif\"\n".to_owned(),
    ] {
        let error = Config::from_toml(&format!("{text}{extra}"), &dir)
            .unwrap_err()
            .to_string();
        assert!(error.contains("what QEMU measured"), "{extra}: {error}");
    }
    let error = Config::from_toml("[nsm]\nkind = \"emulator\"\n", &dir)
        .unwrap_err()
        .to_string();
    assert!(error.contains("nsm.root_certificate"), "{error}");
}

#[test]
fn every_setting_changes_the_measurement() {
    let base = Config::embedded_default();
    let variants = [
        "listen = \"unix:/tmp/e.sock\"",
        "control_port = 5002",
        "health_port = 5003",
        "max_connections = 65",
        "idle_timeout = \"31s\"",
    ];
    let mut digests = vec![base.digest()];
    for text in variants {
        let config = Config::from_toml(text, Path::new("/")).unwrap();
        assert!(!digests.contains(&config.digest()), "{text}");
        digests.push(config.digest());
    }
    assert_eq!(
        base.expected_pcr(),
        PcrValue::ZERO.extend(&base.digest()),
        "the PCR is one extension of the digest"
    );
    assert_eq!(
        base.digest().to_vec(),
        digest::digest(&digest::SHA384, base.canonical().as_bytes())
            .as_ref()
            .to_vec()
    );
}

#[test]
fn a_simulated_nsm_measures_the_image_it_is_given() {
    use eif::{ImageBuilder, Part};
    // A directory of its own: other tests rewrite `dev_dir`'s root while they run.
    let dir = dev_dir("image").join("image");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("root.der"), attest::aws_nitro_root_g1().as_ref()).unwrap();
    let mut eif = Vec::new();
    let built = ImageBuilder::new(Part::bytes(b"kernel".to_vec()), "console=ttyS0")
        .ramdisk(Part::bytes(b"boot".to_vec()))
        .ramdisk(Part::bytes(b"app".to_vec()))
        .write(&mut eif)
        .unwrap();
    std::fs::write(dir.join("enclave.eif"), &eif).unwrap();
    let text = "[nsm]\nkind = \"simulated\"\nroot_certificate = \"root.der\"\n\
                root_key = \"root.key\"\nimage = \"enclave.eif\"\n";
    let config = Config::from_toml(text, &dir).unwrap();
    let NsmConfig::Simulated(sim) = &config.nsm else {
        panic!("not simulated")
    };
    let m = built.measurements;
    assert_eq!(sim.boot_pcrs, Some([m.pcr0, m.pcr1, m.pcr2]));
    assert_eq!(sim.pcr8, None);
    assert!(config.canonical().contains(&m.pcr2.to_hex()));

    let both = format!(
        "{text}pcr0 = \"{}\"\npcr1 = \"{0}\"\npcr2 = \"{0}\"\n",
        m.pcr0
    );
    let error = Config::from_toml(&both, &dir).unwrap_err().to_string();
    assert!(error.contains("not both"), "{error}");
    std::fs::write(dir.join("broken.eif"), &eif[..eif.len() - 1]).unwrap();
    let broken = text.replace("enclave.eif", "broken.eif");
    let error = Config::from_toml(&broken, &dir).unwrap_err().to_string();
    assert!(error.contains("nsm.image"), "{error}");
    let nitro = "[nsm]\nkind = \"nitro\"\nimage = \"enclave.eif\"\n";
    assert!(Config::from_toml(nitro, &dir).is_err());
}

#[test]
fn the_model_s_engine_settings_are_measured_and_precision_is_gone() {
    let dir = dev_dir("engine-settings");
    let log_key = proofs::NoteSigner::generate("log.example/test")
        .unwrap()
        .verifier()
        .to_vkey();
    let model = format!(
        "[model]\nid = \"m\"\nbroker_port = 8001\nsource_port = 8002\nbroker_roots = \
         [\"root.der\"]\nlog_keys = [\"{log_key}\"]\n"
    );
    let base = Config::from_toml(&model, &dir).unwrap();
    assert!(base.canonical().contains("model.repack = false"));
    assert!(base.canonical().contains("model.cpu = haswell"));
    assert!(!base.canonical().contains("model.chat_template"));
    let repack = Config::from_toml(&format!("{model}repack = true\n"), &dir).unwrap();
    let haswell = Config::from_toml(&format!("{model}cpu = \"haswell\"\n"), &dir).unwrap();
    assert_eq!(haswell.digest(), base.digest(), "haswell is the default");
    let auto = Config::from_toml(&format!("{model}cpu = \"auto\"\n"), &dir).unwrap();
    assert!(auto.canonical().contains("model.cpu = auto"));
    let icelake = Config::from_toml(&format!("{model}cpu = \"icelake\"\n"), &dir).unwrap();
    assert!(icelake.canonical().contains("model.cpu = icelake"));
    for wrong in ["zen4", "Haswell", "", "avx2"] {
        let err = Config::from_toml(&format!("{model}cpu = \"{wrong}\"\n"), &dir).unwrap_err();
        assert!(
            err.to_string().contains("model.cpu")
                && err
                    .to_string()
                    .contains("haswell, skylakex, icelake or auto"),
            "{wrong}: {err}"
        );
    }
    let template = Config::from_toml(
        &format!("{model}chat_template = '''{{{{ messages[0].content }}}}'''\n"),
        &dir,
    )
    .unwrap();
    let other_template = Config::from_toml(
        &format!("{model}chat_template = '''{{{{ messages[1].content }}}}'''\n"),
        &dir,
    )
    .unwrap();
    assert!(
        template
            .canonical()
            .contains("model.chat_template = sha384:")
    );
    let digests = [
        base.digest(),
        auto.digest(),
        icelake.digest(),
        repack.digest(),
        template.digest(),
        other_template.digest(),
    ];
    for (i, a) in digests.iter().enumerate() {
        for b in digests.iter().skip(i + 1) {
            assert_ne!(a, b, "each engine setting changes the measurement");
        }
    }
    for (text, named) in [
        ("precision = \"f16\"\n", "model.precision"),
        ("chat_template = \"  \"\n", "model.chat_template"),
    ] {
        let error = Config::from_toml(&format!("{model}{text}"), &dir)
            .unwrap_err()
            .to_string();
        assert!(error.contains(named), "{text:?}: {error}");
    }
}

#[test]
fn witnesses_are_measured_and_a_policy_that_names_them_must_require_one() {
    let dir = dev_dir("witnesses");
    let log_key = proofs::NoteSigner::generate("log.example/test")
        .unwrap()
        .verifier()
        .to_vkey();
    let witness = |name: &str| {
        proofs::cosignature::Cosigner::generate(name)
            .unwrap()
            .verifier()
            .to_vkey()
    };
    let (a, b) = (witness("witness-a.example"), witness("witness-b.example"));
    let model = format!(
        "[model]\nid = \"m\"\nbroker_port = 8001\nsource_port = 8002\nbroker_roots = \
         [\"root.der\"]\nlog_keys = [\"{log_key}\"]\n"
    );
    let none = Config::from_toml(&model, &dir).unwrap();
    assert!(!none.canonical().contains("model.witness"));
    let both =
        Config::from_toml(&format!("{model}witnesses = [\"{a}\", \"{b}\"]\n"), &dir).unwrap();
    let model_config = both.model.as_ref().unwrap();
    assert_eq!(model_config.witnesses_required, 2, "all named, unless told");
    assert!(both.canonical().contains(&format!("model.witness = {a}")));
    // One of two is not a majority: two halves could cosign two histories. Only by name.
    let minority = format!("{model}witnesses = [\"{a}\", \"{b}\"]\nwitnesses_required = 1\n");
    let error = Config::from_toml(&minority, &dir).unwrap_err().to_string();
    assert!(error.contains("not a majority"), "{error}");
    let one_of_two = Config::from_toml(
        &format!("{minority}dangerous_witness_minority = true\n"),
        &dir,
    )
    .unwrap();
    assert!(
        one_of_two
            .canonical()
            .contains("model.dangerous_witness_minority = true")
    );
    let digests = [none.digest(), both.digest(), one_of_two.digest()];
    for (i, x) in digests.iter().enumerate() {
        for y in digests.iter().skip(i + 1) {
            assert_ne!(x, y, "the witnesses and their threshold are measured");
        }
    }
    for (text, named) in [
        (
            format!("witnesses = [\"{a}\"]\nwitnesses_required = 0\n"),
            "model.witnesses_required",
        ),
        (
            format!("witnesses = [\"{a}\"]\nwitnesses_required = 2\n"),
            "model.witnesses_required",
        ),
        (
            format!("witnesses = [\"{a}\", \"{a}\"]\n"),
            "model.witnesses_required",
        ),
        // A log key (type 0x01) is not a witness key (type 0x04).
        (format!("witnesses = [\"{log_key}\"]\n"), "model.witnesses"),
        ("witnesses = [\"garbage\"]\n".to_owned(), "model.witnesses"),
    ] {
        let error = Config::from_toml(&format!("{model}{text}"), &dir)
            .unwrap_err()
            .to_string();
        assert!(error.contains(named), "{text:?}: {error}");
    }
}
