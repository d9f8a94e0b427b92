//! Key-value data: one in-memory map per store label, optionally persisted (`--kv-dir`) as
//! an append-only log per label (`<dir>/<label>.log`) that is replayed and compacted at
//! startup, so data survives a host restart the way Spin's default SQLite store does.
//!
//! Log record: `S` key-len(u32 LE) key value-len(u32 LE) value, or `D` key-len(u32 LE) key.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

type Map = BTreeMap<String, Vec<u8>>;

#[derive(Default)]
pub struct KvData {
    maps: HashMap<String, Map>,
    logs: HashMap<String, File>,
}

impl KvData {
    /// Empty stores for `labels`; with `dir`, loaded from and persisted to `<dir>/<label>.log`.
    pub fn open(labels: &[String], dir: Option<&Path>) -> Result<Self> {
        let mut data = Self::default();
        for label in labels {
            let mut map = Map::new();
            if let Some(dir) = dir {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create --kv-dir {}", dir.display()))?;
                let path = dir.join(format!("{label}.log"));
                if path.exists() {
                    map = replay(&path)
                        .with_context(|| format!("cannot read key-value log {}", path.display()))?;
                }
                let log = compact(&path, &map)
                    .with_context(|| format!("cannot write key-value log {}", path.display()))?;
                data.logs.insert(label.clone(), log);
            }
            data.maps.insert(label.clone(), map);
        }
        Ok(data)
    }

    pub fn map(&self, label: &str) -> Option<&Map> {
        self.maps.get(label)
    }

    pub fn set(&mut self, label: &str, key: String, value: Vec<u8>) -> std::io::Result<()> {
        if let Some(log) = self.logs.get_mut(label) {
            let mut record = Vec::with_capacity(key.len() + value.len() + 9);
            record.push(b'S');
            push_field(&mut record, key.as_bytes())?;
            push_field(&mut record, &value)?;
            log.write_all(&record)?;
        }
        self.maps
            .entry(label.to_string())
            .or_default()
            .insert(key, value);
        Ok(())
    }

    pub fn delete(&mut self, label: &str, key: &str) -> std::io::Result<()> {
        let Some(map) = self.maps.get_mut(label) else {
            return Ok(());
        };
        if map.remove(key).is_some() {
            if let Some(log) = self.logs.get_mut(label) {
                let mut record = vec![b'D'];
                push_field(&mut record, key.as_bytes())?;
                log.write_all(&record)?;
            }
        }
        Ok(())
    }
}

fn push_field(out: &mut Vec<u8>, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::other("key-value field over 4 GiB"))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn replay(path: &Path) -> Result<Map> {
    let bytes = std::fs::read(path)?;
    let mut map = Map::new();
    let mut rest = bytes.as_slice();
    while let Some((&op, tail)) = rest.split_first() {
        let (key, tail) = take_field(tail)?;
        let key = String::from_utf8(key.to_vec()).context("key is not UTF-8")?;
        rest = match op {
            b'S' => {
                let (value, tail) = take_field(tail)?;
                map.insert(key, value.to_vec());
                tail
            }
            b'D' => {
                map.remove(&key);
                tail
            }
            _ => bail!("corrupt record"),
        };
    }
    Ok(map)
}

fn take_field(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_at_checked(4).context("truncated record")?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    rest.split_at_checked(len).context("truncated record")
}

/// Rewrites the log with just the live entries and returns it open for appending.
fn compact(path: &Path, map: &Map) -> Result<File> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let mut out = Vec::new();
    for (key, value) in map {
        out.push(b'S');
        push_field(&mut out, key.as_bytes())?;
        push_field(&mut out, value)?;
    }
    std::fs::write(&tmp, &out)?;
    std::fs::rename(&tmp, path)?;
    Ok(OpenOptions::new().append(true).open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_across_reopen() {
        let dir = std::env::temp_dir().join(format!("spin-host-kv-{}", std::process::id()));
        let labels = vec!["default".to_string()];
        let mut kv = KvData::open(&labels, Some(&dir)).expect("open");
        kv.set("default", "a".into(), b"1".to_vec()).expect("set");
        kv.set("default", "b".into(), b"2".to_vec()).expect("set");
        kv.set("default", "a".into(), b"3".to_vec()).expect("set");
        kv.delete("default", "b").expect("delete");
        drop(kv);
        let kv = KvData::open(&labels, Some(&dir)).expect("reopen");
        let map = kv.map("default").expect("store");
        assert_eq!(map.get("a").map(Vec::as_slice), Some(&b"3"[..]));
        assert!(!map.contains_key("b"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
