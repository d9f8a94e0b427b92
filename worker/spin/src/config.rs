//! Settings from Spin variables, under the other hosts' names in lower case (Spin variable names
//! are `[a-z][a-z0-9_]*`): `OPENREGISTRY_DATABASE_URL` is the component variable
//! `openregistry_database_url`, set for `spin up` as `SPIN_VARIABLE_OPENREGISTRY_DATABASE_URL`.
//! The table of settings is `openregistry_host::SETTINGS` (shown in the README); `spin.toml`
//! declares each one.

use openregistry_host::SettingSource;

/// Reads component variables through `fermyon:spin/variables`.
pub struct SpinVariables;

impl SettingSource for SpinVariables {
    fn get(&self, name: &str) -> Option<String> {
        // `undefined` (not declared or no value) and provider failures both read as unset; a
        // required setting then fails with a message naming it.
        spin_sdk::variables::get(&name.to_ascii_lowercase()).ok()
    }

    fn spelled(&self, name: &str) -> String {
        name.to_ascii_lowercase()
    }

    fn how_to_set_secret(&self, name: &str) -> String {
        format!(
            "give the application variable a value (`SPIN_VARIABLE_{name}=…` for `spin up`, \
             `--variable {}=…` for `spin aka deploy`)",
            name.to_ascii_lowercase()
        )
    }
}
