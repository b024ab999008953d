//! `lockfs put|cat|ls|stat|mkdir|rm`: the tree from a shell, without a mount.

use std::io::{Read, Write};

use serde_json::json;

use super::CliError;
use crate::client::{ops, Client, ClientError};
use crate::errno::{EEXIST, EISDIR, ESTALE};
use crate::proto;

fn ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

pub async fn put(
    client: &Client,
    path: &str,
    mode: u32,
    if_generation: Option<u64>,
) -> Result<(), CliError> {
    let mut data = Vec::new();
    std::io::stdin()
        .read_to_end(&mut data)
        .map_err(|e| CliError::Other(format!("reading stdin: {e}")))?;
    match client.put(path, data, mode, if_generation).await {
        Ok(_) => Ok(()),
        Err(ClientError::Remote { code, message }) if code == ESTALE => {
            Err(CliError::Precondition(format!("{path}: {message}")))
        }
        Err(e) => Err(CliError::client(path)(e)),
    }
}

pub async fn cat(client: &Client, path: &str) -> Result<(), CliError> {
    let data = client.read(path).await.map_err(CliError::client(path))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&data)
        .and_then(|_| out.flush())
        .map_err(|e| CliError::Other(format!("writing stdout: {e}")))
}

fn kind_name(k: proto::Kind) -> &'static str {
    match k {
        proto::Kind::DIR => "dir",
        proto::Kind::FILE => "file",
        proto::Kind::SYMLINK => "symlink",
    }
}

pub async fn ls(client: &Client, path: &str, json: bool) -> Result<(), CliError> {
    let entries = client.readdir(path).await.map_err(CliError::client(path))?;
    if json {
        let list: Vec<_> = entries
            .iter()
            .map(|d| json!({"name": d.name, "instance": d.instance, "kind": kind_name(d.kind)}))
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for d in &entries {
            let slash = if d.kind == proto::Kind::DIR { "/" } else { "" };
            println!("{}{slash}", d.name);
        }
    }
    Ok(())
}

pub async fn stat(client: &Client, path: &str, json: bool) -> Result<(), CliError> {
    let a = client.stat(path).await.map_err(CliError::client(path))?;
    let v = json!({
        "path": path,
        "kind": kind_name(a.kind),
        "instance": a.instance,
        "mode": format!("{:04o}", a.mode),
        "uid": a.uid,
        "gid": a.gid,
        "size": a.size,
        "mtime_ns": a.mtime_ns,
        "ctime_ns": a.ctime_ns,
        "content_generation": a.content_generation,
        "lock_generation": a.lock_generation,
        "acl_generation": a.acl_generation,
        "ephemeral": a.ephemeral,
        "children": a.children,
        "links": a.links,
    });
    if json {
        println!("{v}");
    } else if let serde_json::Value::Object(map) = v {
        for (k, v) in map {
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            println!("{k}: {v}");
        }
    }
    Ok(())
}

pub async fn mkdir(
    client: &Client,
    path: &str,
    mode: u32,
    parents: bool,
    ephemeral: bool,
) -> Result<(), CliError> {
    if parents {
        mkdir_parents(client, path, mode).await?;
    } else {
        let (uid, gid) = ids();
        client
            .call(ops::mkdir(path, mode, uid, gid))
            .await
            .map_err(CliError::client(path))?;
    }
    if ephemeral {
        client
            .call(ops::set_ephemeral(path, true))
            .await
            .map_err(CliError::client(path))?;
    }
    Ok(())
}

async fn mkdir_parents(client: &Client, path: &str, mode: u32) -> Result<(), CliError> {
    let (uid, gid) = ids();
    let mut prefix = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        prefix.push('/');
        prefix.push_str(part);
        match client.call(ops::mkdir(&prefix, mode, uid, gid)).await {
            Ok(_) => {}
            Err(ClientError::Remote { code: EEXIST, .. }) => {
                // Fine if it is a directory; stat tells, with the right error otherwise.
                let a = client
                    .stat(&prefix)
                    .await
                    .map_err(CliError::client(prefix.as_str()))?;
                if a.kind != proto::Kind::DIR {
                    return Err(CliError::Other(format!("{prefix}: not a directory")));
                }
            }
            Err(e) => return Err(CliError::client(prefix.as_str())(e)),
        }
    }
    Ok(())
}

pub async fn rm(client: &Client, path: &str) -> Result<(), CliError> {
    match client.call(ops::unlink(path)).await {
        Ok(_) => Ok(()),
        Err(ClientError::Remote { code: EISDIR, .. }) => {
            client
                .call(ops::rmdir(path))
                .await
                .map_err(CliError::client(path))?;
            Ok(())
        }
        Err(e) => Err(CliError::client(path)(e)),
    }
}
