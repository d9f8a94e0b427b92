//! `spin.toml` (spin_manifest_version = 2): parsing, validation and variable resolution for
//! the one component this host serves, with Spin's semantics:
//!
//! * `[variables]`: each needs `default` or `required = true` (not both); values come from
//!   `SPIN_VARIABLE_<UPPERCASE_NAME>` in the environment, else the default. A required
//!   variable with no value stops the host at startup.
//! * `[component.<id>.variables]`: name -> template (`"{{ app_var }}"`, literals around it);
//!   templates may only name declared app variables.
//! * `allowed_outbound_hosts`: templates are resolved from app variables, then every entry
//!   is checked as Spin checks it (see `allowed_hosts`).
//! * `key_value_stores`: only `default` exists here (Spin defines no other store without a
//!   runtime config), so any other label is a startup error, as in Spin.
//! * `[[trigger.http]]`: the routes that point at the component.

use crate::allowed_hosts::AllowedHosts;
use crate::routes::Route;
use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The component to serve, fully resolved.
#[derive(Debug)]
pub struct Component {
    pub id: String,
    pub source: PathBuf,
    /// Component variable name -> resolved value.
    pub variables: HashMap<String, String>,
    pub environment: Vec<(String, String)>,
    pub key_value_stores: Vec<String>,
    pub allowed_hosts: AllowedHosts,
    pub routes: Vec<Route>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: toml::Value,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, RawVariable>,
    #[serde(default)]
    trigger: BTreeMap<String, Vec<toml::Table>>,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
struct RawApplication {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariable {
    #[serde(default)]
    required: bool,
    default: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility; the host has nothing to hide
    secret: bool,
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct RawHttpTrigger {
    route: toml::Value,
    component: Option<toml::Value>,
    #[serde(default)]
    executor: Option<toml::Table>,
    #[serde(default)]
    static_response: Option<toml::Table>,
}

/// Every field Spin's v2 `[component.<id>]` accepts; the ones this host cannot honour are
/// rejected when used, so a test never passes on a feature production would lack.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    source: toml::Value,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    files: Vec<toml::Value>,
    #[serde(default)]
    allowed_http_hosts: Vec<String>,
    #[serde(default)]
    sqlite_databases: Vec<String>,
    #[serde(default)]
    ai_models: Vec<String>,
    #[serde(default)]
    dependencies: toml::Table,
    // Accepted and ignored (build, tooling and descriptive fields).
    #[allow(dead_code)]
    description: Option<String>,
    #[allow(dead_code)]
    exclude_files: Option<toml::Value>,
    #[allow(dead_code)]
    targets: Option<toml::Value>,
    #[allow(dead_code)]
    build: Option<toml::Value>,
    #[allow(dead_code)]
    tool: Option<toml::Value>,
    #[allow(dead_code)]
    dependencies_inherit_configuration: Option<toml::Value>,
    #[allow(dead_code)]
    profile: Option<toml::Value>,
}

/// Loads `manifest_path` and resolves the component to serve: `component_id`, or the only
/// component with an HTTP trigger.
pub fn load(
    manifest_path: &Path,
    component_id: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Component> {
    let text = std::fs::read_to_string(manifest_path)
        .with_context(|| format!("cannot read manifest {}", manifest_path.display()))?;
    let raw: RawManifest = toml::from_str(&text)
        .with_context(|| format!("invalid manifest {}", manifest_path.display()))?;
    ensure!(
        raw.spin_manifest_version.as_integer() == Some(2),
        "unsupported spin_manifest_version {} (only 2 is supported)",
        raw.spin_manifest_version
    );
    ensure!(
        !raw.application.name.is_empty(),
        "[application] name is empty"
    );
    let base_dir = manifest_path.parent().unwrap_or(Path::new("."));

    let app_values = resolve_app_variables(&raw.variables, env)?;

    // Routes per component from [[trigger.http]].
    let mut routes: BTreeMap<String, Vec<Route>> = BTreeMap::new();
    for (kind, triggers) in &raw.trigger {
        if kind != "http" {
            eprintln!(
                "spin-test-host: ignoring {} [[trigger.{kind}]] entries",
                triggers.len()
            );
            continue;
        }
        for table in triggers {
            let t: RawHttpTrigger = toml::Value::Table(table.clone())
                .try_into()
                .context("invalid [[trigger.http]] entry")?;
            ensure!(
                t.static_response.is_none(),
                "[[trigger.http]] static_response is not supported by this host"
            );
            if let Some(executor) = &t.executor {
                let kind = executor.get("type").and_then(|v| v.as_str());
                ensure!(
                    kind.is_none_or(|k| k == "http"),
                    "[[trigger.http]] executor {kind:?} is not supported (only the wasi-http executor)"
                );
            }
            let component = match &t.component {
                Some(toml::Value::String(id)) => id.clone(),
                Some(_) => bail!("[[trigger.http]] inline components are not supported; use component = \"<id>\""),
                None => bail!("[[trigger.http]] without a component (static responses are not supported)"),
            };
            ensure!(
                raw.component.contains_key(&component),
                "[[trigger.http]] names component {component:?}, which is not defined"
            );
            match &t.route {
                toml::Value::String(route) => routes
                    .entry(component)
                    .or_default()
                    .push(Route::parse(route)?),
                toml::Value::Table(p)
                    if p.get("private").and_then(|v| v.as_bool()) == Some(true) => {}
                other => {
                    bail!("route must be a string pattern or '{{ private = true }}', got {other}")
                }
            }
        }
    }

    let id = match component_id {
        Some(id) => id.to_string(),
        None => {
            let mut ids = routes.keys();
            match (ids.next(), ids.next()) {
                (Some(id), None) => id.clone(),
                (None, _) => bail!("no [[trigger.http]] routes to any component"),
                (Some(_), Some(_)) => bail!(
                    "several components have HTTP routes ({}); choose one with --component",
                    routes.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            }
        }
    };
    let raw_component = raw
        .component
        .get(&id)
        .with_context(|| format!("component {id:?} is not defined in the manifest"))?;
    let routes = routes.remove(&id).unwrap_or_default();
    ensure!(
        !routes.is_empty(),
        "component {id:?} has no [[trigger.http]] route"
    );
    resolve_component(&id, raw_component, &app_values, base_dir, routes)
}

fn resolve_app_variables(
    vars: &BTreeMap<String, RawVariable>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HashMap<String, String>> {
    let mut values = HashMap::new();
    let mut missing = Vec::new();
    for (name, var) in vars {
        validate_name(name)
            .map_err(anyhow::Error::msg)
            .context("invalid [variables] name")?;
        ensure!(
            !(var.required && var.default.is_some()),
            "variable {name:?}: `required` and `default` are mutually exclusive"
        );
        ensure!(
            var.required || var.default.is_some(),
            "variable {name:?}: needs either a `default` or `required = true`"
        );
        let env_name = format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase());
        match env(&env_name).or_else(|| var.default.clone()) {
            Some(value) => {
                values.insert(name.clone(), value);
            }
            None => missing.push(format!("{name} (set {env_name})")),
        }
    }
    ensure!(
        missing.is_empty(),
        "required application variable(s) have no value: {}",
        missing.join(", ")
    );
    Ok(values)
}

fn resolve_component(
    id: &str,
    raw: &RawComponent,
    app_values: &HashMap<String, String>,
    base_dir: &Path,
    routes: Vec<Route>,
) -> Result<Component> {
    let source = match &raw.source {
        toml::Value::String(path) => base_dir.join(path),
        _ => bail!("component {id:?}: only a local file path is supported as `source`"),
    };
    for (field, used) in [
        ("files", !raw.files.is_empty()),
        ("sqlite_databases", !raw.sqlite_databases.is_empty()),
        ("ai_models", !raw.ai_models.is_empty()),
        ("dependencies", !raw.dependencies.is_empty()),
    ] {
        ensure!(
            !used,
            "component {id:?}: `{field}` is not supported by this host"
        );
    }
    ensure!(
        raw.allowed_http_hosts.is_empty(),
        "component {id:?}: `allowed_http_hosts` is deprecated; use `allowed_outbound_hosts`"
    );
    for label in &raw.key_value_stores {
        ensure!(
            label == "default",
            "unknown key_value_stores label {label:?} for component {id:?} (only \"default\" is defined)"
        );
    }

    let mut variables = HashMap::new();
    for (name, template) in &raw.variables {
        validate_name(name)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("component {id:?}: invalid variable name"))?;
        let value = expand(template, app_values)
            .with_context(|| format!("component {id:?}: variable {name:?}"))?;
        variables.insert(name.clone(), value);
    }

    let hosts = raw
        .allowed_outbound_hosts
        .iter()
        .map(|h| expand(h, app_values))
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("component {id:?}: allowed_outbound_hosts"))?;
    let allowed_hosts = AllowedHosts::parse(&hosts)
        .with_context(|| format!("component {id:?}: allowed_outbound_hosts"))?;

    Ok(Component {
        id: id.to_string(),
        source,
        variables,
        environment: raw.environment.clone().into_iter().collect(),
        key_value_stores: raw.key_value_stores.clone(),
        allowed_hosts,
        routes,
    })
}

/// Spin's variable-name rule: lower-case ASCII letters, digits and single underscores,
/// starting with a letter and ending with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), String> {
    let reason = if name.is_empty() {
        "must not be empty".to_string()
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        format!("invalid character {c:?}. Variable names may contain only lower-case letters, numbers, and underscores.")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        "must start with a lowercase ASCII letter".to_string()
    } else if !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        "must end with a lowercase ASCII letter or digit".to_string()
    } else if name.contains("__") {
        "must not contain multiple consecutive underscores".to_string()
    } else {
        return Ok(());
    };
    Err(format!("{name:?}: {reason}"))
}

/// Expands a Spin template: literal text with `{{ name }}` expressions naming app variables.
fn expand(template: &str, values: &HashMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let (expr, tail) = after
            .split_once("}}")
            .with_context(|| format!("unmatched '{{{{' in template {template:?}"))?;
        let name = expr.trim();
        let value = values
            .get(name)
            .with_context(|| format!("template {template:?} names unknown variable {name:?}"))?;
        out.push_str(value);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "abc", "a1b2c3", "a_1", "a_1_b_3"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "aX", "1bc", "_x", "x.y", "x_", "a__b", "x-y"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates() {
        let v = HashMap::from([("host".to_string(), "h:1".to_string())]);
        assert_eq!(
            expand("http://{{ host }}/x", &v).ok().as_deref(),
            Some("http://h:1/x")
        );
        assert_eq!(
            expand("{{host}}{{ host }}", &v).ok().as_deref(),
            Some("h:1h:1")
        );
        assert!(expand("{{ nope }}", &v).is_err());
        assert!(expand("{{ host", &v).is_err());
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("spin.toml");
        std::fs::write(&p, text).expect("write manifest");
        p
    }

    #[test]
    fn resolves_component() {
        let dir = std::env::temp_dir().join(format!("spin-host-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let manifest = write(
            &dir,
            r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
greeting = { default = "hi" }
upstream = { default = "http://127.0.0.1:9" }
token = { required = true, secret = true }
[[trigger.http]]
route = "/..."
component = "app"
[component.app]
source = "app.wasm"
key_value_stores = ["default"]
allowed_outbound_hosts = ["{{ upstream }}"]
[component.app.variables]
greeting = "{{ greeting }}!"
token = "{{ token }}"
"#,
        );
        let env_none = |_: &str| None;
        let err = load(&manifest, None, &env_none).expect_err("token is required");
        assert!(
            format!("{err:#}").contains("SPIN_VARIABLE_TOKEN"),
            "{err:#}"
        );
        let env = |k: &str| (k == "SPIN_VARIABLE_TOKEN").then(|| "s3cret".to_string());
        let c = load(&manifest, None, &env).expect("load");
        assert_eq!(c.id, "app");
        assert_eq!(c.variables["greeting"], "hi!");
        assert_eq!(c.variables["token"], "s3cret");
        assert!(c.allowed_hosts.allows("http", "127.0.0.1", Some(9)));
        assert!(!c.allowed_hosts.allows("http", "127.0.0.1", Some(10)));
        assert_eq!(c.source, dir.join("app.wasm"));

        let with_path = write(
            &dir,
            r#"
spin_manifest_version = 2
[application]
name = "t"
[[trigger.http]]
route = "/..."
component = "app"
[component.app]
source = "app.wasm"
allowed_outbound_hosts = ["http://127.0.0.1:9/bucket"]
"#,
        );
        let err = load(&with_path, None, &env_none).expect_err("paths are rejected");
        assert!(format!("{err:#}").contains("has a path"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
