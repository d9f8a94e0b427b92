//! The Spin host interfaces: `fermyon:spin/key-value@2.0.0` (stores shared by every
//! instance for the life of the process, see `kv`, with key and value size limits) and
//! `fermyon:spin/variables@2.0.0` (the component's resolved variables).

use crate::kv::KvData;
use anyhow::Result;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "fermyon:spin/spin-host",
        with: { "fermyon:spin/key-value.store": crate::spin_apis::OpenStore },
    });
}

use bindings::fermyon::spin::{key_value, variables};

/// Per-process state shared by all instances.
pub struct SpinShared {
    stores: Mutex<KvData>,
    allowed_labels: HashSet<String>,
    variables: HashMap<String, String>,
    component_id: String,
    max_key_bytes: usize,
    max_value_bytes: usize,
}

/// Key-value settings from the command line.
pub struct KvOptions<'a> {
    pub dir: Option<&'a Path>,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

impl SpinShared {
    pub fn new(
        component_id: &str,
        key_value_stores: &[String],
        variables: HashMap<String, String>,
        kv: &KvOptions<'_>,
    ) -> Result<Self> {
        Ok(Self {
            stores: Mutex::new(KvData::open(key_value_stores, kv.dir)?),
            allowed_labels: key_value_stores.iter().cloned().collect(),
            variables,
            component_id: component_id.to_string(),
            max_key_bytes: kv.max_key_bytes,
            max_value_bytes: kv.max_value_bytes,
        })
    }
}

/// The host side of a guest's `store` resource.
pub struct OpenStore {
    label: String,
}

/// What the generated host traits are implemented on: the shared state plus the
/// instance's resource table.
pub struct SpinView<'a> {
    pub shared: &'a SpinShared,
    pub table: &'a mut ResourceTable,
}

struct SpinApis;

impl HasData for SpinApis {
    type Data<'a> = SpinView<'a>;
}

pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> SpinView<'_>,
) -> Result<()> {
    key_value::add_to_linker::<T, SpinApis>(linker, get)?;
    variables::add_to_linker::<T, SpinApis>(linker, get)?;
    Ok(())
}

type KvResult<T> = std::result::Result<T, key_value::Error>;

impl SpinView<'_> {
    fn label(&self, store: &Resource<OpenStore>) -> KvResult<String> {
        self.table
            .get(store)
            .map(|s| s.label.clone())
            .map_err(|e| key_value::Error::Other(format!("invalid store handle: {e}")))
    }

    fn check_key(&self, key: &str) -> KvResult<()> {
        if key.len() > self.shared.max_key_bytes {
            return Err(key_value::Error::Other(format!(
                "key of {} bytes exceeds the {}-byte key limit",
                key.len(),
                self.shared.max_key_bytes
            )));
        }
        Ok(())
    }

    /// Runs `f` on the store's data under the lock.
    fn with_data<R>(
        &self,
        store: &Resource<OpenStore>,
        f: impl FnOnce(&mut KvData, &str) -> KvResult<R>,
    ) -> KvResult<R> {
        let label = self.label(store)?;
        let mut data = self
            .shared
            .stores
            .lock()
            .map_err(|_| key_value::Error::Other("key-value store lock poisoned".into()))?;
        f(&mut data, &label)
    }

    /// Runs `f` on the store's map (read-only) under the lock.
    fn with_map<R>(
        &self,
        store: &Resource<OpenStore>,
        f: impl FnOnce(Option<&BTreeMap<String, Vec<u8>>>) -> R,
    ) -> KvResult<R> {
        self.with_data(store, |data, label| Ok(f(data.map(label))))
    }
}

fn persist_error(e: std::io::Error) -> key_value::Error {
    key_value::Error::Other(format!("cannot persist to --kv-dir: {e}"))
}

impl key_value::Host for SpinView<'_> {}

impl key_value::HostStore for SpinView<'_> {
    fn open(&mut self, label: String) -> KvResult<Resource<OpenStore>> {
        // Spin: a label the component does not list is access-denied, whether or not it
        // exists; a listed label is always defined (checked at startup).
        if !self.shared.allowed_labels.contains(&label) {
            return Err(key_value::Error::AccessDenied);
        }
        self.table
            .push(OpenStore { label })
            .map_err(|_| key_value::Error::StoreTableFull)
    }

    fn get(&mut self, store: Resource<OpenStore>, key: String) -> KvResult<Option<Vec<u8>>> {
        self.check_key(&key)?;
        self.with_map(&store, |m| m.and_then(|m| m.get(&key).cloned()))
    }

    fn set(&mut self, store: Resource<OpenStore>, key: String, value: Vec<u8>) -> KvResult<()> {
        self.check_key(&key)?;
        if value.len() > self.shared.max_value_bytes {
            return Err(key_value::Error::Other(format!(
                "value of {} bytes exceeds the {}-byte value limit",
                value.len(),
                self.shared.max_value_bytes
            )));
        }
        self.with_data(&store, |data, label| {
            data.set(label, key, value).map_err(persist_error)
        })
    }

    fn delete(&mut self, store: Resource<OpenStore>, key: String) -> KvResult<()> {
        self.check_key(&key)?;
        self.with_data(&store, |data, label| {
            data.delete(label, &key).map_err(persist_error)
        })
    }

    fn exists(&mut self, store: Resource<OpenStore>, key: String) -> KvResult<bool> {
        self.check_key(&key)?;
        self.with_map(&store, |m| m.is_some_and(|m| m.contains_key(&key)))
    }

    fn get_keys(&mut self, store: Resource<OpenStore>) -> KvResult<Vec<String>> {
        self.with_map(&store, |m| {
            m.map(|m| m.keys().cloned().collect()).unwrap_or_default()
        })
    }

    fn drop(&mut self, store: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl variables::Host for SpinView<'_> {
    fn get(&mut self, name: String) -> std::result::Result<String, variables::Error> {
        crate::manifest::validate_name(&name).map_err(variables::Error::InvalidName)?;
        self.shared.variables.get(&name).cloned().ok_or_else(|| {
            variables::Error::Undefined(format!(
                "no variable for {:?}.{name:?}",
                self.shared.component_id
            ))
        })
    }
}
