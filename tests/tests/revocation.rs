//! Revocations with a real broker process: a revoked model gets no release and no renewal, the
//! revocation is logged before it acts, and deleting the revocations file on the broker's host
//! does not lift it (the log holds it).

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::time::{Duration, Instant};

use common::broker::{
    Backend, Broker, Document, MODEL_ID, Setup, client_pcr0, denied, exchange_direct,
};
use common::test_roots;
use proofs::entry::{Entry, Outcome};
use sealing::Id;
use sealing::release::{KeyRequest, Message, renewal_user_data};

fn document(broker: &Broker) -> Document<'_> {
    Document {
        root: &broker.root.nitro,
        region: "eu-west-3",
        pcr0: client_pcr0(),
    }
}

fn release(broker: &Broker) -> Message {
    let request = KeyRequest::new(Id::new(MODEL_ID).unwrap()).unwrap();
    exchange_direct(broker, "127.0.0.1".parse().unwrap(), MODEL_ID, |n| {
        Some(document(broker).make(&request, &n))
    })
}

/// A renewal of `key_id`, as an enclave of the pinned image would ask for it.
fn renewal(broker: &Broker, key_id: &Id) -> Message {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use protocol::frame::{read_frame, write_frame};
        let mut stream = tokio::net::TcpStream::connect(broker.listen).await.unwrap();
        let model = Id::new(MODEL_ID).unwrap();
        let hello = Message::Hello {
            model_id: model.clone(),
        };
        write_frame(&mut stream, &hello.encode()).await.unwrap();
        let Message::Challenge { nonce, .. } =
            Message::decode(&read_frame(&mut stream).await.unwrap()).unwrap()
        else {
            return Message::Denied {
                reason: "no challenge".into(),
                message: String::new(),
            };
        };
        let user_data = renewal_user_data(&model, key_id, &nonce);
        let renew = Message::Renew {
            nonce,
            key_id: key_id.clone(),
            document: document(broker).make_with(&nonce, Some(&user_data), None),
        };
        write_frame(&mut stream, &renew.encode()).await.unwrap();
        Message::decode(&read_frame(&mut stream).await.unwrap()).unwrap()
    })
}

fn revoke(broker: &Broker, args: &[&str]) -> std::process::Output {
    let mut all = vec!["revoke"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", "broker.toml"]);
    broker.command(&all).output().unwrap()
}

#[test]
fn a_revoked_model_gets_no_release_or_renewal_even_after_its_file_is_deleted() {
    let root = test_roots("National Root");
    let mut broker = Broker::setup(
        "revocation",
        Backend::Software,
        Setup {
            root: &root,
            signing_root: None,
            rules: "regions = [\"eu-west-3\"]",
            pcr0s: &[client_pcr0()],
            config_extra: "",
        },
    );
    broker.start();
    assert!(matches!(release(&broker), Message::Release { .. }));
    // The key the broker sealed the model under, from its record.
    let record = std::fs::read_dir(broker.dir.join("state/models"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    let key_id = Id::new(record["key_id"].as_str().unwrap()).unwrap();
    assert!(
        matches!(renewal(&broker, &key_id), Message::Renewed { .. }),
        "{}",
        broker.log()
    );

    // Bad input is refused before anything is recorded.
    for bad in [
        vec!["--image", "abc", "--reason", "x"],
        vec!["--model", MODEL_ID],
        vec!["--model", MODEL_ID, "--reason", "two\nlines"],
        vec!["--instance", "not-an-instance", "--reason", "x"],
        vec!["--reason", "nothing named"],
    ] {
        let out = revoke(&broker, &bad);
        assert!(!out.status.success(), "{bad:?}");
    }
    let out = revoke(&broker, &["--model", MODEL_ID, "--reason", "order 12"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Revoking again changes nothing.
    let out = revoke(
        &broker,
        &["--model", MODEL_ID, "--reason", "order 12", "--json"],
    );
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["already_revoked"], true);

    assert_eq!(denied(&release(&broker)), "revoked");
    assert_eq!(denied(&renewal(&broker, &key_id)), "revoked");
    // Logged within the poll period even without traffic; here it was logged before the first
    // denial at the latest.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = revoke(&broker, &["--list", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if list["revocations"][0]["log_index"].is_u64() {
            break;
        }
        assert!(Instant::now() < deadline, "{list}");
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.stop();

    // Someone with the broker's host deletes the file: the log still holds the revocation.
    std::fs::remove_file(broker.dir.join("state/revocations.json")).unwrap();
    broker.start();
    assert_eq!(denied(&release(&broker)), "revoked");
    assert_eq!(denied(&renewal(&broker, &key_id)), "revoked");
    broker.stop();
    assert!(
        broker.log().contains("missing from the revocations file"),
        "{}",
        broker.log()
    );
    let entries = broker.entries();
    let revoked_at = entries
        .iter()
        .position(|e| matches!(e.entry(), Entry::Revocation(r) if r.value == MODEL_ID))
        .unwrap();
    let refused: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            matches!(e.entry(),
                Entry::KeyRelease(k) | Entry::LeaseRenewal(k)
                    if k.outcome == Outcome::Denied && k.reason == "revoked")
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(refused.len(), 4, "{}", broker.log());
    assert!(refused.iter().all(|i| *i > revoked_at));
}
