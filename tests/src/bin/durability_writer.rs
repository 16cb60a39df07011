//! A child process for the durability test: writes records in a loop and
//! prints a line for every write the store acknowledged, until killed.
//!
//! `durability-writer DIR START` — creates issues titled `ack-{n}` from
//! `n = START` on, and every third one also moves to `accepted`, printing
//! `created {id} {n}` and `accepted {id}` after each acknowledged write.

use std::io::Write;

use gridsync_core::{IssueOp, IssueStatus};
use gridsync_tests::{new_issue, open_store, worker};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: durability-writer DIR START"))?;
    let start: usize = args.next().unwrap_or_else(|| "0".into()).parse()?;
    let store = open_store(std::path::Path::new(&dir), "DUR");
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for n in start.. {
        let mut issue = new_issue(n, 1, 1);
        issue.title = format!("ack-{n}");
        let id = store.create_issue(&worker(1), issue)?;
        writeln!(out, "created {id} {n}")?;
        out.flush()?;
        if n % 3 == 0 {
            store.update_issue(
                id,
                &worker(1),
                IssueOp::Transition {
                    to: IssueStatus::Accepted,
                    reason: String::new(),
                },
            )?;
            writeln!(out, "accepted {id}")?;
            out.flush()?;
        }
    }
    Ok(())
}
