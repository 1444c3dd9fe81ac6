//! Pre-initialisation (WASI 0.2, where every request gets a fresh instance).
//! `edge-deploy/build.sh` runs the component's `preinit` export once with
//! the Spin variable values it was given and snapshots the instance's memory
//! into the component (Wizer's method, done by the test host's `preinit`
//! command). Every instance then starts with the config already compiled;
//! a request whose variables differ from those compiles its own.

use std::sync::Mutex;

use super::variable_names;
use crate::config::{Config, Variables};

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        inline: "
            package portcullis:edge;
            world preinit {
                /// Compiles the embedded config with these Spin variables and
                /// keeps it for the snapshot. Returns the names of the variables
                /// the config uses that were not given (nothing is kept then).
                export preinit: func(variables: list<tuple<string, string>>) -> result<list<string>, string>;
            }
        ",
        runtime_path: "spin_sdk::wit_bindgen::rt",
    });
}

/// The config compiled at pre-initialisation, with the variables it was compiled with.
static SNAPSHOT: Mutex<Option<(Variables, Config)>> = Mutex::new(None);

struct Preinit;

impl bindings::Guest for Preinit {
    fn preinit(given: Vec<(String, String)>) -> Result<Vec<String>, String> {
        let mut vars = Variables::new();
        let mut missing = Vec::new();
        // Only the variables the config uses: a request collects exactly those.
        for name in variable_names() {
            match given.iter().find(|(n, _)| n == name) {
                Some((_, value)) => vars.insert(name, value.as_str()),
                None => missing.push(name.to_string()),
            }
        }
        if missing.is_empty() {
            let config = super::compile(&vars)?;
            *SNAPSHOT.lock().map_err(|_| "the snapshot's lock is poisoned".to_string())? = Some((vars, config));
        }
        Ok(missing)
    }
}

bindings::export!(Preinit with_types_in bindings);

/// The pre-initialised config, if it was compiled with exactly these
/// variables. It is taken, not copied: the instance serves one request.
pub(super) fn take(vars: &Variables) -> Option<Config> {
    let mut snapshot = SNAPSHOT.lock().ok()?;
    if snapshot.as_ref().is_some_and(|(made_with, _)| made_with == vars) {
        snapshot.take().map(|(_, config)| config)
    } else {
        None
    }
}
