//! Integrity against a real cluster: a replica whose disk was damaged refuses to start (and is
//! rebuilt as the README says), one whose disk lost entries it had acknowledged refuses to go
//! on, and a replica whose state was changed behind its back is found
//! diverged by the digest checks, serves no reads and shows as such in `cluster status`. The
//! cluster keeps every acknowledged write throughout.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{ok, tls, Cluster};

/// Exit status of a node that found its data directory corrupt.
const EXIT_CORRUPT: i32 = 65;

fn status(servers: &str) -> serde_json::Value {
    serde_json::from_slice(&ok(servers, &["cluster", "status", "--json"], None))
        .expect("status json")
}

fn follower_of(c: &Cluster) -> u64 {
    let leader = status(&c.servers())["leader"].as_u64().expect("leader");
    (1..=3).find(|id| *id != leader).unwrap()
}

/// Flips one bit in the middle of every RocksDB table and write-ahead log file under `dir`, and
/// one in the first record of every segment of lockfs's own log; returns how many files it
/// damaged.
fn flip_bits(dir: &Path) -> usize {
    let mut damaged = 0;
    for entry in std::fs::read_dir(dir.join("db")).expect("db dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.ends_with(".sst") || name.ends_with(".log")) {
            continue;
        }
        let mut bytes = std::fs::read(&path).expect("read");
        if bytes.is_empty() {
            continue;
        }
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        std::fs::write(&path, bytes).expect("write");
        println!("flipped a bit of {name}");
        damaged += 1;
    }
    // lockfs's own write-ahead log: a bit of the first record of every segment that has one
    // (32 bytes of header, 16 of the record's head, then its payload).
    for entry in std::fs::read_dir(dir.join("wal")).expect("wal dir") {
        let path = entry.expect("entry").path();
        let mut bytes = std::fs::read(&path).expect("read");
        if bytes.len() < 64 || bytes[32..40].iter().all(|b| *b == 0) {
            continue;
        }
        bytes[52] ^= 0x10;
        std::fs::write(&path, bytes).expect("write");
        println!("flipped a bit of {}", path.display());
        damaged += 1;
    }
    damaged
}

#[test]
fn a_follower_with_flipped_bits_refuses_to_start_and_is_rebuilt() {
    let mut c = Cluster::start(3, &[]);
    let servers = c.servers();
    for i in 0..20 {
        ok(
            &servers,
            &["put", &format!("/f{i}")],
            Some(format!("{i}").as_bytes()),
        );
    }
    let victim = follower_of(&c);
    assert!(c.terminate(victim), "node {victim} did not stop cleanly");
    let data = c.nodes[victim as usize - 1].data.clone();
    assert!(flip_bits(&data) > 0, "nothing to damage");

    exits_corrupt(&mut c, victim, "corrupt");

    // The others serve on, and the README's rebuild works: remove the node, start it afresh.
    ok(&servers, &["put", "/during"], Some(b"d"));
    ok(&servers, &["cluster", "remove", &victim.to_string()], None);
    let addr = c.join(victim, &[]);
    let node =
        lockfs::client::Client::pinned(addr, Duration::from_secs(60), "check".into(), tls::admin());
    for (path, value) in [("/f7", "7"), ("/during", "d")] {
        match common::block_on(node.call(lockfs::client::ops::read(path))) {
            Ok(lockfs::proto::Response_oneof_result::data(d)) => {
                assert_eq!(String::from_utf8_lossy(&d.data), value, "{path}")
            }
            other => panic!("{path} on the rebuilt node: {other:?}"),
        }
    }
}

/// Starts node `id`, which must refuse to serve: it exits as corrupt, saying `why` and how to
/// rebuild it.
fn exits_corrupt(c: &mut Cluster, id: u64, why: &str) {
    c.spawn(id);
    let code = c.wait_exit(id, Duration::from_secs(30));
    let log = c.log_of(id);
    assert_eq!(code, Some(EXIT_CORRUPT), "{log}");
    assert!(
        log.contains(why) && log.contains("Rebuilding a node"),
        "{log}"
    );
}

/// Copies the directory `from` to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn a_follower_put_back_to_an_older_copy_of_its_directory_refuses_to_go_on() {
    let mut c = Cluster::start(3, &[]);
    let servers = c.servers();
    ok(&servers, &["put", "/before"], Some(b"b"));
    let leader = status(&servers)["leader"].as_u64().expect("leader");
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    let data = c.nodes[victim as usize - 1].data.clone();
    let copy = data.with_extension("older");
    assert!(c.terminate(victim), "node {victim} did not stop cleanly");
    copy_dir(&data, &copy);
    c.spawn(victim);
    // The victim takes part in these (a majority needs it while another member is away),
    // so the leader counts them as held there.
    // (Asked before: a node that just started may not know the leader yet.)
    let other = (1..=3).find(|id| *id != victim && *id != leader).unwrap();
    assert!(c.terminate(other), "node {other} did not stop cleanly");
    for i in 0..10 {
        ok(&servers, &["put", &format!("/after{i}")], Some(b"a"));
    }
    c.spawn(other);
    // The victim's disk goes back in time: the entries it acknowledged since are gone.
    assert!(c.terminate(victim), "node {victim} did not stop cleanly");
    std::fs::remove_dir_all(&data).expect("rm");
    copy_dir(&copy, &data);
    exits_corrupt(&mut c, victim, "lost entries it had acknowledged");
    // The others serve on.
    ok(&servers, &["put", "/later"], Some(b"l"));
}

#[test]
fn a_replica_whose_state_was_changed_behind_its_back_is_found_diverged() {
    let mut c = Cluster::start(3, &["--check-entries", "5"]);
    let servers = c.servers();
    ok(&servers, &["put", "/victim"], Some(b"original"));
    let victim = follower_of(&c);
    // A follower learns of a commit with the leader's next message; a read there (ReadIndex)
    // has it apply the write before the write's record is changed below.
    let on_victim = lockfs::client::Client::pinned(
        c.addr(victim),
        Duration::from_secs(30),
        "check".into(),
        tls::admin(),
    );
    match common::block_on(on_victim.call(lockfs::client::ops::read("/victim"))) {
        Ok(lockfs::proto::Response_oneof_result::data(d)) => assert_eq!(d.data, b"original"),
        other => panic!("node {victim}: {other:?}"),
    }
    drop(on_victim);
    assert!(c.terminate(victim), "node {victim} did not stop cleanly");

    // Change one file's contents in the stored state, as a bug or a bad disk controller
    // might: the record stays well-formed and its checksum is right.
    {
        let store = lockfs::storage::Store::open(&c.nodes[victim as usize - 1].data).unwrap();
        let state = store.state_store();
        let (applied, records) = state.load().unwrap();
        let (key, mut value) = records
            .into_iter()
            .find(|(_, v)| v.windows(8).any(|w| w == b"original"))
            .expect("the file's record");
        let at = value.windows(8).position(|w| w == b"original").unwrap();
        value[at..at + 8].copy_from_slice(b"tampered");
        let mut batch = lockfs::storage::WriteBatch::default();
        state.stage_changes(&mut batch, vec![(key, Some(value))], applied);
        store.write(batch, true).unwrap();
    }
    c.spawn(victim);

    // Writes go on; within a few checks the victim finds itself diverged.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut writes = 0;
    let diverged = loop {
        let out = c.cli(
            &servers,
            &["put", "/tick"],
            Some(writes.to_string().as_bytes()),
        );
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            c.logs()
        );
        writes += 1;
        let s = status(&servers);
        let diverged: Vec<u64> = s["diverged"]
            .as_array()
            .expect("diverged list")
            .iter()
            .filter_map(|v| v.as_u64())
            .collect();
        if !diverged.is_empty() || Instant::now() > deadline {
            break diverged;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("diverged {diverged:?} after {writes} writes");
    assert_eq!(diverged, vec![victim], "{}", c.logs());
    assert!(c.log_of(victim).contains("STATE DIVERGED"));
    // Its report reaches the log: every member, the leader included, logs it.
    let reported =
        |c: &Cluster| (1..=3).all(|id| c.log_of(id).contains("reports that its state diverged"));
    while !reported(&c) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(reported(&c), "{}", c.logs());

    // The diverged replica serves no reads (a client that knows the others goes there); the
    // others serve the true contents.
    let addrs: Vec<String> = (1..=3).map(|id| c.addr(id)).collect();
    let read_at = |id: u64| {
        let node = lockfs::client::Client::pinned(
            addrs[id as usize - 1].clone(),
            Duration::from_secs(3),
            "check".into(),
            tls::admin(),
        );
        common::block_on(node.call(lockfs::client::ops::read("/victim")))
    };
    // It never answers. The client retries "unavailable" until its deadline and then says
    // why, unless its last attempt was still waiting then: ask again.
    let refused = || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match read_at(victim) {
                Err(e) if e.to_string().contains("diverged") => return,
                Err(e) => assert!(Instant::now() < deadline, "never refused: {e}"),
                Ok(r) => panic!("the diverged node answered {r:?}"),
            }
        }
    };
    refused();
    for id in (1..=3).filter(|id| *id != victim) {
        match read_at(id) {
            Ok(lockfs::proto::Response_oneof_result::data(d)) => assert_eq!(d.data, b"original"),
            other => panic!("node {id}: {other:?}"),
        }
    }
    assert_eq!(ok(&servers, &["cat", "/victim"], None), b"original");
    let text = String::from_utf8_lossy(&ok(&servers, &["cluster", "status"], None)).to_string();
    assert!(text.contains("DIVERGED"), "{text}");

    // It stays refused after a restart, until it is rebuilt.
    assert!(c.terminate(victim));
    c.spawn(victim);
    refused();
}
