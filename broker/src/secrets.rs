//! Secrets that come from the environment (`$BROKER_PKCS11_PIN`, `$BROKER_PASSPHRASE`): the
//! `broker` command takes them out of its environment before it starts anything else
//! ([`adopt`]), so they are not left in the environment of the process or of anything it
//! starts, and keeps them here, wiped when taken. A library user that adopts nothing gets the
//! environment's value.
//!
//! Files (`key_store.pin_file`, `key_store.passphrase_file`) remain the better place: the
//! initial environment of a process stays readable in `/proc/<pid>/environ` to its user.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use zeroize::Zeroizing;

/// The environment variables that hold secrets.
pub const SECRET_VARIABLES: [&str; 3] = [
    "BROKER_PKCS11_PIN",
    "BROKER_PASSPHRASE",
    "APPROVER_PKCS11_PIN",
];

/// Secrets by variable name.
type Secrets = Mutex<HashMap<&'static str, Zeroizing<Vec<u8>>>>;

fn store() -> &'static Secrets {
    static STORE: OnceLock<Secrets> = OnceLock::new();
    STORE.get_or_init(Mutex::default)
}

/// Keep `value` as the secret named `name` (one of [`SECRET_VARIABLES`]).
pub fn adopt(name: &'static str, value: Zeroizing<Vec<u8>>) {
    store()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(name, value);
}

/// The secret named `name`: the adopted one, else the environment's (a copy, wiped when
/// dropped).
pub fn get(name: &'static str) -> Option<Zeroizing<Vec<u8>>> {
    let adopted = store()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(name)
        .cloned();
    adopted
        .or_else(|| std::env::var_os(name).map(|value| Zeroizing::new(value.into_encoded_bytes())))
}
