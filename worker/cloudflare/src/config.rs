//! Settings from wrangler `[vars]` and secrets, under the canonical names of the one settings table
//! (`openregistry_host::SETTINGS`, shown in the README): this module reads the bindings as a
//! `SettingSource` and says how a secret is set with wrangler.

use js_sys::Reflect;
use openregistry_host::{Host, SettingSource, Settings};
use wasm_bindgen::JsValue;
use worker::Env;

/// The KV namespace binding that holds upload sessions (and Skynet tail segments).
pub const KV_BINDING: &str = "UPLOAD_SESSIONS";

/// A setting's value as text; unset or empty is `None`. `[vars]` may hold numbers and booleans.
fn text(env: &Env, name: &str) -> Option<String> {
    let value = Reflect::get(env.as_ref(), &JsValue::from_str(name)).ok()?;
    let text = if let Some(s) = value.as_string() {
        s
    } else if let Some(n) = value.as_f64() {
        if n.fract() == 0.0 && n.abs() < 9.0e15 {
            format!("{}", n as i64)
        } else {
            n.to_string()
        }
    } else if let Some(b) = value.as_bool() {
        b.to_string()
    } else {
        return None;
    };
    let text = text.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// The Worker's bindings as a source of settings.
struct Vars<'a>(&'a Env);

impl SettingSource for Vars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        text(self.0, name)
    }

    fn how_to_set_secret(&self, name: &str) -> String {
        format!("set it with `wrangler secret put {name}` (or in [vars] if it is not a secret)")
    }
}

thread_local! {
    /// The settings as this isolate first read them: `[vars]` and secrets are fixed for an
    /// isolate's life (a new deployment or secret starts new isolates), and reading ~40 bindings
    /// through JS on every request is a measurable part of a warm one.
    static READ: std::cell::OnceCell<Result<Settings, String>> = const { std::cell::OnceCell::new() };
}

/// Reads and checks every setting (once per isolate); the error names the first bad one.
pub fn from_env(env: &Env) -> Result<Settings, String> {
    READ.with(|read| {
        read.get_or_init(|| Settings::read(&Vars(env), Host::Cloudflare))
            .clone()
    })
}
