//! Any answer from the database's HTTP endpoint: Neon's SQL-over-HTTP response parser (rows,
//! fields, errors with SQLSTATE codes, batches) in `NeonSql`. Must fail cleanly, never panic.
#![no_main]

use std::sync::Arc;

use futures_executor::block_on;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use openregistry::ports::{Sql, Statement};
use openregistry_backends::{NeonConfig, NeonSql};
use openregistry_fuzz::{Answer, ScriptedHttp};

#[derive(Debug, Arbitrary)]
struct Input {
    batch: bool,
    answer: Answer,
}

fuzz_target!(|input: Input| {
    let config =
        NeonConfig::new("postgresql://user:secret@db.example/neondb", None).expect("a valid URL");
    let sql = NeonSql::new(Arc::new(ScriptedHttp::new(vec![input.answer])), config);
    let statement = Statement::new("SELECT name, size FROM t WHERE a = $1").bind("x");
    if input.batch {
        let _ = block_on(sql.batch(vec![statement.clone(), statement]));
    } else if let Ok(rows) = block_on(sql.query(statement)) {
        for row in rows {
            let _ = (row.text(0), row.uint(1), row.bytes(0), row.opt_text(1));
        }
    }
});
