//! `lockfs cluster status`.

use serde_json::json;

use super::{CliError, ClientOpts};
use crate::client::ops;
use crate::proto::{Response_oneof_result as Res, StatusReply};

async fn ask(opts: &ClientOpts) -> Result<StatusReply, CliError> {
    match opts
        .client()
        .call(ops::cluster_status())
        .await
        .map_err(CliError::client("cluster status"))?
    {
        Res::status(s) => Ok(s),
        _ => Err(CliError::Other(
            "unexpected answer to cluster status".into(),
        )),
    }
}

pub async fn status(opts: &ClientOpts, as_json: bool) -> Result<(), CliError> {
    let mut s = ask(opts).await?;
    // Only the leader knows every member's progress; ask it when the first node is not it.
    if s.leader_id != 0 && s.leader_id != s.node_id {
        if let Some(leader) = s.members.iter().find(|m| m.id == s.leader_id) {
            let mut at_leader = opts.clone();
            at_leader.servers = vec![leader.addr.clone()];
            if let Ok(from_leader) = ask(&at_leader).await {
                s = from_leader;
            }
        }
    }
    let members: Vec<_> = s
        .members
        .iter()
        .map(|m| {
            json!({"id": m.id, "addr": m.addr, "role": m.role, "reachable": m.reachable,
                   "matched": m.matched})
        })
        .collect();
    if as_json {
        let leader = if s.leader_id == 0 {
            serde_json::Value::Null
        } else {
            json!(s.leader_id)
        };
        println!(
            "{}",
            json!({
                "cluster_id": format!("{:016x}", s.cluster_id),
                "leader": leader,
                "term": s.term,
                "commit": s.commit,
                "answered_by": s.node_id,
                "applied": s.applied,
                "first_index": s.first_index,
                "last_index": s.last_index,
                "snapshot_index": s.snapshot_index,
                "members": members,
            })
        );
        return Ok(());
    }
    let leader = match s.leader_id {
        0 => "none".to_string(),
        id => id.to_string(),
    };
    println!(
        "cluster {:016x}  leader {leader}  term {}  commit {}",
        s.cluster_id, s.term, s.commit
    );
    println!(
        "node {} applied {}, log {}..{}, snapshot at {}",
        s.node_id, s.applied, s.first_index, s.last_index, s.snapshot_index
    );
    println!(
        "{:>4}  {:<22} {:<10} {:<10} {:>10}",
        "ID", "ADDRESS", "ROLE", "REACHABLE", "MATCHED"
    );
    for m in &s.members {
        println!(
            "{:>4}  {:<22} {:<10} {:<10} {:>10}",
            m.id,
            m.addr,
            m.role,
            if m.reachable { "yes" } else { "no" },
            m.matched
        );
    }
    Ok(())
}
