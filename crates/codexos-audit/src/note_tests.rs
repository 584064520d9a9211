#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use pretty_assertions::assert_eq;
use proptest::prelude::*;

use super::*;

/// The example key pair, text and signature published with the signed-note format's reference
/// implementation: Ed25519 is deterministic, so our signature must be the same bytes.
const EXAMPLE_VERIFIER: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const EXAMPLE_SIGNER: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const EXAMPLE_TEXT: &str =
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const EXAMPLE_SIGNATURE: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

fn checkpoint() -> Checkpoint {
    Checkpoint { origin: "codexos.test/audit/acme".into(), size: 20, root: [0xab; 32], time_ms: 1_700_000_000_123 }
}

fn key(name: &str) -> SigningKey {
    SigningKey::generate(name).unwrap()
}

#[test]
fn the_published_example_signs_and_verifies_byte_for_byte() {
    let signer = SigningKey::from_text(EXAMPLE_SIGNER).unwrap();
    let verifier = VerifierKey::parse(EXAMPLE_VERIFIER).unwrap();
    assert_eq!(signer.verifier(), verifier);
    assert_eq!(verifier.id(), 0xc74f20a3);
    assert_eq!(verifier.to_string(), EXAMPLE_VERIFIER);
    assert_eq!(signer.to_text().as_str(), format!("{EXAMPLE_SIGNER}\n"));
    let note = signer.sign_text(EXAMPLE_TEXT);
    assert_eq!(note, format!("{EXAMPLE_TEXT}\n{EXAMPLE_SIGNATURE}"));
    assert_eq!(open_note(&note, &verifier).unwrap(), EXAMPLE_TEXT);
}

#[test]
fn key_id_is_the_hash_of_name_type_and_key() {
    let signer = key("codexos.test/audit");
    let verifier = signer.verifier();
    let mut input = b"codexos.test/audit\n\x01".to_vec();
    input.extend_from_slice(verifier.key.as_bytes());
    let digest = Sha256::digest(&input);
    assert_eq!(verifier.id(), u32::from_be_bytes(digest[..4].try_into().unwrap()));
    assert_eq!(verifier.name(), "codexos.test/audit");
}

#[test]
fn sign_then_open() {
    let signer = key("codexos.test/audit");
    let note = signer.sign(&checkpoint());
    assert!(note.starts_with(&checkpoint().body()));
    assert_eq!(
        checkpoint().body(),
        "codexos.test/audit/acme\n20\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\ntime 1700000000123\n"
    );
    assert_eq!(open_checkpoint(&note, &signer.verifier()).unwrap(), checkpoint());

    let mut negative = checkpoint();
    negative.time_ms = -5;
    negative.size = 0;
    assert_eq!(open_checkpoint(&signer.sign(&negative), &signer.verifier()).unwrap(), negative);
}

#[test]
fn a_modified_body_fails() {
    let signer = key("codexos.test/audit");
    let note = signer.sign(&checkpoint());
    for (from, to) in [("\n20\n", "\n21\n"), ("acme", "acmf"), ("time 1", "time 2"), ("q6ur", "q6us")] {
        let forged = note.replacen(from, to, 1);
        assert_ne!(forged, note);
        let err = open_checkpoint(&forged, &signer.verifier()).unwrap_err();
        assert!(matches!(err, AuditError::BadSignature { .. }), "{from}: {err}");
    }
}

#[test]
fn another_keys_note_fails_and_other_keys_lines_are_ignored() {
    let signer = key("codexos.test/audit");
    let other = key("codexos.test/audit");
    let note = other.sign(&checkpoint());
    let err = open_checkpoint(&note, &signer.verifier()).unwrap_err();
    assert!(matches!(err, AuditError::NoSignature { .. }), "{err}");

    // A signature line of another key next to ours: ignored.
    let ours = signer.sign(&checkpoint());
    let other_line = note.rsplit_once("\n\n").unwrap().1;
    let both = format!("{ours}{other_line}");
    assert_eq!(open_checkpoint(&both, &signer.verifier()).unwrap(), checkpoint());
    assert_eq!(open_checkpoint(&both, &other.verifier()).unwrap(), checkpoint());

    // Another key's signature under our name and key id: a signature of ours that fails.
    let (_, our_signature) = ours.rsplit_once(' ').unwrap();
    let (_, their_signature) = note.rsplit_once(' ').unwrap();
    let mut forged_bytes = BASE64.decode(their_signature.trim_end()).unwrap();
    forged_bytes[..4].copy_from_slice(&signer.verifier().id().to_be_bytes());
    let forged = ours.replace(our_signature, &format!("{}\n", BASE64.encode(forged_bytes)));
    let err = open_checkpoint(&forged, &signer.verifier()).unwrap_err();
    assert!(matches!(err, AuditError::BadSignature { .. }), "{err}");
}

#[test]
fn malformed_notes_and_bodies_fail() {
    let signer = key("codexos.test/audit");
    let verifier = signer.verifier();
    let note = signer.sign(&checkpoint());
    for bad in [
        String::new(),
        note.trim_end().to_string(),
        note.replacen("\n\n", "\n", 1),
        note.replace('\u{2014}', "-"),
        note.replacen("acme", "ac\tme", 1),
        format!("{note}\n"),
        format!("{note}junk\n"),
    ] {
        assert!(open_checkpoint(&bad, &verifier).is_err(), "{bad:?} was accepted");
    }
    for body in [
        "codexos.test/audit/acme\n20\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n",
        "codexos.test/audit/acme\n020\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\ntime 1\n",
        "codexos.test/audit/acme\n-1\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\ntime 1\n",
        "codexos.test/audit/acme\n20\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6t=\ntime 1\n",
        "codexos.test/audit/acme\n20\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urqw==\ntime 1\n",
        "codexos.test/audit/acme\n20\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\ntime 01\n",
        "codexos.test/audit/acme\n20\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\ntime -0\n",
        "codexos.test/audit/acme\n20\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\ntime 1\nextra\n",
        "\n20\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\ntime 1\n",
    ] {
        let signed = signer.sign_text(body);
        let err = open_checkpoint(&signed, &verifier).unwrap_err();
        assert!(matches!(err, AuditError::BadCheckpoint(_)), "{body:?}: {err}");
    }
}

#[test]
fn verifier_key_text_round_trips_and_is_checked() {
    let verifier = key("codexos.test/audit").verifier();
    let text = verifier.to_string();
    assert_eq!(VerifierKey::parse(&text).unwrap(), verifier);
    let (name, rest) = text.split_once('+').unwrap();
    let (id, encoded) = rest.split_once('+').unwrap();
    let wrong_id = format!("{:08x}", verifier.id() ^ 1);
    for bad in [
        format!("{name}+{wrong_id}+{encoded}"),
        format!("other+{id}+{encoded}"),
        format!("{name}+{id}"),
        format!("{name}+{}+{encoded}", &id[1..]),
        format!("{name} x+{id}+{encoded}"),
        format!("+{id}+{encoded}"),
        format!("{name}+{id}+{}", &encoded[4..]),
        format!("{name}+{id}+AA{}", &encoded[2..]),
    ] {
        assert!(VerifierKey::parse(&bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn key_names_are_checked() {
    for name in ["", "a b", "a+b", "a\nb", "a\u{a0}b"] {
        assert!(SigningKey::generate(name).is_err(), "{name:?}");
    }
    SigningKey::generate("codexos.example/audit").unwrap();
}

#[test]
fn signing_key_text_round_trips_and_debug_hides_the_secret() {
    let signer = key("codexos.test/audit");
    let text = signer.to_text();
    let loaded = SigningKey::from_text(&text).unwrap();
    assert_eq!(loaded.verifier(), signer.verifier());
    let debug = format!("{signer:?}");
    let secret = text.trim_end().rsplit_once('+').unwrap().1;
    assert!(!debug.contains(secret), "{debug}");
    assert!(debug.contains("codexos.test/audit"), "{debug}");
    // An error about a bad key never quotes it.
    let broken = text.replace("PRIVATE+KEY+codexos.test/audit+", "PRIVATE+KEY+codexos.test/audit+0");
    let err = SigningKey::from_text(&broken).unwrap_err().to_string();
    assert!(!err.contains(secret), "{err}");
}

#[test]
fn key_file_is_created_private_and_loaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.key");
    let created = SigningKey::load_or_create(&path, "codexos.test/audit").unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let loaded = SigningKey::load_or_create(&path, "codexos.test/audit").unwrap();
    assert_eq!(loaded.verifier(), created.verifier());
    // Nothing is left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let err = SigningKey::load_or_create(&path, "codexos.test/other").unwrap_err();
    assert!(matches!(err, AuditError::KeyNameMismatch { .. }), "{err}");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = SigningKey::load_or_create(&path, "codexos.test/audit").unwrap_err();
    assert!(matches!(err, AuditError::KeyFilePermissions { mode: 0o640, .. }), "{err}");
    assert!(err.to_string().contains("chmod 600"), "{err}");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, "not a key\n").unwrap();
    let err = SigningKey::load_or_create(&path, "codexos.test/audit").unwrap_err();
    assert!(matches!(err, AuditError::KeyFile { .. }), "{err}");

    let err = SigningKey::load_or_create(&dir.path().join("missing/audit.key"), "codexos.test/audit").unwrap_err();
    assert!(matches!(err, AuditError::Io { .. }), "{err}");
}

#[test]
fn concurrent_creations_agree_on_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.key");
    let keys: Vec<VerifierKey> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| SigningKey::load_or_create(&path, "codexos.test/audit").unwrap().verifier()))
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    assert!(keys.iter().all(|key| *key == keys[0]));
}

proptest! {
    #[test]
    fn opening_arbitrary_notes_never_panics(body in "[a-z0-9/+= \n-]{0,120}", tail in "[\u{2014} a-zA-Z0-9/+=\n]{0,120}") {
        let verifier = VerifierKey::parse(EXAMPLE_VERIFIER).unwrap();
        let _ = open_checkpoint(&format!("{body}\n\n{tail}"), &verifier);
        let _ = VerifierKey::parse(&body);
        let _ = SigningKey::from_text(&tail);
    }
}
