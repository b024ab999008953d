//! The mounts' consistent cache, through real mounts of a real 3-node cluster: what a mount
//! caches costs the cluster nothing to read again, and a read that starts after a write
//! returned on any host sees it, whether the file was cached, missing or listed; a caching
//! mount that is frozen holds other hosts' writes only until its lease runs out, and serves
//! nothing stale when it wakes; `-o cache=off` reads the cluster every time. A watcher hears
//! of a change only once no cache can serve what it replaced.
//!
//! These need root and `/dev/fuse`; without them they fail loudly. Background processes and
//! mounts are stopped when a test ends, then the cluster.

mod common;

use std::time::Duration;

use common::hosts::Hosts;

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) of a process this test started and has not reaped.
    unsafe { libc::kill(pid as i32, sig) };
}

#[test]
fn cached_reads_cost_nothing_and_every_write_is_seen_at_once() {
    let h = Hosts::start();
    h.ok("mkdir \"$A/c\"; echo one > \"$A/c/f\"; cat \"$A/c/f\"; ls \"$A/c\"; stat \"$A/c/f\"");
    let before = h.requests();
    h.ok("for i in $(seq 20); do cat \"$A/c/f\" >/dev/null; stat \"$A/c/f\" >/dev/null; ls \"$A/c\" >/dev/null; done");
    assert_eq!(h.requests() - before, 0, "cached reads went to the cluster");
    // Another host's replace, seen by the next read here; and again, many times.
    let out = h.ok(
        "for i in $(seq 30); do echo \"b$i\" > \"$B/c/f\"; \
           got=$(cat \"$A/c/f\"); [ \"$got\" = \"b$i\" ] || { echo \"read $got after b$i\"; exit 1; }; \
         done; echo ok",
    );
    assert_eq!(out.trim(), "ok");
    // A name known to be missing, then created elsewhere; a listing, then a new entry.
    h.ok("test ! -e \"$A/c/new\"; ls \"$A/c\" > /dev/null");
    h.ok("echo n > \"$B/c/new\"");
    assert_eq!(h.ok("cat \"$A/c/new\""), "n\n");
    assert_eq!(h.ok("ls \"$A/c\""), "f\nnew\n");
    // Deleted and renamed elsewhere.
    h.ok("rm \"$B/c/new\"; mv \"$B/c/f\" \"$B/c/g\"");
    h.ok("test ! -e \"$A/c/new\"; test ! -e \"$A/c/f\"");
    assert_eq!(h.ok("cat \"$A/c/g\""), "b30\n");
    assert_eq!(h.ok("ls \"$A/c\""), "g\n");
    // Attributes changed elsewhere.
    h.ok("chmod 600 \"$B/c/g\"");
    assert_eq!(h.ok("stat -c %a \"$A/c/g\"").trim(), "600");
    // The CLI's writes (no mount, no session) too.
    h.ok("echo cli | \"$LOCKFS\" put /c/g");
    assert_eq!(h.ok("cat \"$A/c/g\""), "cli\n");
}

#[test]
fn a_write_brings_its_own_attributes_and_still_sees_the_next_host_s_write() {
    let h = Hosts::start();
    h.ok("echo one > \"$A/f\"; stat \"$A/f\" > /dev/null");
    // `echo >` and the stat after it: the write is the only request. The kernel asks for the
    // file's attributes after every write; the mount answers from what the write returned.
    let before = h.requests();
    h.ok("for i in $(seq 20); do echo \"a$i\" > \"$A/f\"; stat \"$A/f\" > /dev/null; done");
    assert_eq!(
        h.requests() - before,
        20,
        "requests for 20 writes and their stats"
    );
    // A write here, then one on host B: this host's next stat and read see B's.
    let out = h.ok(
        "for i in $(seq 30); do echo \"a$i\" > \"$A/f\"; printf 'b%03d-longer\\n' $i > \"$B/f\"; \
           size=$(stat -c %s \"$A/f\"); [ \"$size\" = 12 ] || { echo \"size $size after b$i\"; exit 1; }; \
           got=$(cat \"$A/f\"); [ \"$got\" = \"$(printf 'b%03d-longer' $i)\" ] || { echo \"read $got\"; exit 1; }; \
         done; echo ok",
    );
    assert_eq!(out.trim(), "ok");
}

/// A file this host creates brings its own attributes and name: the kernel's questions about
/// it right after the creation, and a `stat` of it, cost the cluster nothing. What a creation
/// still asks: the creation itself, made without a handle in a directory whose files are not
/// ephemeral.
#[test]
fn a_creation_brings_its_own_attributes() {
    let h = Hosts::start();
    h.ok("mkdir \"$A/d\"; : > \"$A/d/first\"; stat \"$A/d\" \"$A/d/first\" > /dev/null");
    let before = h.requests();
    h.ok("for i in $(seq 20); do : > \"$A/d/n$i\"; stat \"$A/d/n$i\" > /dev/null; done");
    let asked = h.requests() - before;
    // 1 a creation here, the creation itself, made without a handle, so no close either; the
    // name was found missing in the directory's kept listing (2 with the lookup, 3 with a
    // handle to close, 4 when the mount asked for the directory again after each creation,
    // whose attributes it changed; 6 when it asked for the new file's attributes too); a
    // little slack for reads that met a change and were not kept.
    assert!(
        asked < 2 * 20,
        "{asked} requests for 20 creations and their stats"
    );
    // Kept, and still the latest: another host's write is seen here at once.
    h.ok("echo longer > \"$B/d/n1\"");
    assert_eq!(h.ok("stat -c %s \"$A/d/n1\"").trim(), "7");
    h.ok("rm \"$B/d/n2\"");
    h.ok("test ! -e \"$A/d/n2\"");
    // A file made without a handle and removed elsewhere while open here is still the
    // open file's, as POSIX has it: the mount takes a handle when it hears of the removal.
    let out = h.ok(
        "exec 3> \"$A/d/held\"; echo one >&3; rm \"$B/d/held\"; echo two >&3; \
         test ! -e \"$A/d/held\" && cat /proc/self/fd/3; exec 3>&-",
    );
    assert_eq!(out, "one\ntwo\n");
}

/// A directory's listing, once kept, answers names missing there without asking the cluster,
/// and follows every host's changes of the directory: names made, removed and renamed
/// elsewhere are seen here at once.
#[test]
fn a_kept_listing_answers_missing_names_and_follows_every_host_s_changes() {
    let h = Hosts::start();
    h.ok("mkdir \"$A/d\"; echo x > \"$A/d/a\"; ls \"$A/d\" > /dev/null");
    let before = h.requests();
    h.ok("for i in $(seq 20); do test ! -e \"$A/d/m$i\"; done");
    assert_eq!(
        h.requests() - before,
        0,
        "missing names asked of the cluster"
    );
    let out = h.ok("for i in $(seq 10); do echo $i > \"$B/d/n$i\"; \
           [ \"$(cat \"$A/d/n$i\")\" = $i ] || { echo \"n$i not seen\"; exit 1; }; \
         done; \
         mv \"$B/d/n1\" \"$B/d/a\"; rm \"$B/d/n2\"; mv \"$B/d/n3\" \"$B/d/z\"; \
         test ! -e \"$A/d/n1\" && test ! -e \"$A/d/n2\" && test ! -e \"$A/d/n3\" || exit 1; \
         cat \"$A/d/a\" \"$A/d/z\"; ls \"$A/d\" | LC_ALL=C sort | tr '\\n' ' '");
    assert_eq!(out, "1\n3\na n10 n4 n5 n6 n7 n8 n9 z ");
    // This host's own creations, and what B finds after them.
    h.ok("for i in $(seq 5); do echo $i > \"$A/d/o$i\"; done");
    assert_eq!(h.ok("ls \"$B/d\" | grep -c '^o'").trim(), "5");
    assert_eq!(h.ok("ls \"$A/d\" | grep -c '^o'").trim(), "5");
}

/// Two hosts open the same new name with O_CREAT at once (`>>` in scripts started together
/// on both). A caching mount creates exclusively first, to keep what it made; the one that
/// loses the race must still open the file, never fail with EEXIST, and both writes land.
#[test]
fn a_file_both_hosts_create_at_once_opens_on_both() {
    let h = Hosts::start();
    let out = h.sh("for i in $(seq 40); do
             echo a >> \"$A/n$i\" & a=$!
             echo b >> \"$B/n$i\" & b=$!
             wait $a || echo \"A failed at $i\"
             wait $b || echo \"B failed at $i\"
             got=$(sort \"$A/n$i\" | tr -d '\\n')
             [ \"$got\" = ab ] || echo \"n$i holds $got\"
         done");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "{}{}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn a_frozen_caching_mount_holds_writes_only_until_its_lease_runs_out() {
    let h = Hosts::start();
    let c = h.extra_mount("c", "host-a", "allow_other,ttl=2");
    let cpath = c.path.display().to_string();
    h.ok("echo old > \"$A/f\"");
    assert_eq!(h.ok(&format!("cat \"{cpath}/f\"")), "old\n");
    let pid = c.pid().expect("mount C runs");
    signal(pid, libc::SIGSTOP);
    // B's write waits for C (frozen, caching f) only until C's lease has run out.
    let out = h.sh("echo new > \"$B/f\"");
    signal(pid, libc::SIGCONT);
    assert!(out.status.success(), "{}", out.stderr);
    // A lower bound, which a slow machine only lengthens: C's lease (2 s, renewed every
    // 0.67 s) was still running when it froze, so the write could not return before it
    // ran out.
    assert!(
        out.elapsed >= Duration::from_secs(1),
        "the write returned after {:?}, while mount C, frozen, still held the file",
        out.elapsed
    );
    // C woke with its lease gone: it serves nothing it cached before.
    assert_eq!(h.ok(&format!("cat \"{cpath}/f\"")), "new\n");
    drop(c);
}

#[test]
fn with_cache_off_every_read_asks_the_cluster() {
    let h = Hosts::start();
    let c = h.extra_mount("c", "host-a", "allow_other,cache=off");
    let cpath = c.path.display().to_string();
    h.ok("echo x > \"$A/f\"");
    h.ok(&format!("cat \"{cpath}/f\""));
    let before = h.requests();
    h.ok(&format!(
        "for i in $(seq 10); do cat \"{cpath}/f\" > /dev/null; done"
    ));
    assert!(
        h.requests() - before >= 10,
        "reads with cache=off did not reach the cluster"
    );
    drop(c);
}

#[test]
fn a_caching_session_may_not_outlast_a_minute() {
    let h = Hosts::start();
    let client = std::sync::Arc::new(lockfs::client::Client::new(
        h.cluster.servers().split(',').map(String::from).collect(),
        Duration::from_secs(20),
        "cache-ttl".into(),
        common::tls::admin(),
    ));
    common::block_on(async {
        use lockfs::client::session::Session;
        let open = |ttl: u64, cache: bool| {
            let ttl = Duration::from_secs(ttl);
            Session::open_with(client.clone(), ttl, ttl, "h", "t", cache)
        };
        let refused = open(120, true)
            .await
            .err()
            .expect("a two-minute caching session");
        assert!(refused.to_string().contains("at most"), "{refused}");
        // Without a cache, or within the bound, it opens.
        open(120, false)
            .await
            .expect("a two-minute session")
            .close()
            .await
            .unwrap();
        open(60, true)
            .await
            .expect("a one-minute caching session")
            .close()
            .await
            .unwrap();
    });
}

/// Stats `path` on a mount whose process is stopped, in a process killed after 2 s: the mode
/// if the kernel answered by itself, `None` if it waited for the mount.
fn stat_mode_frozen(h: &Hosts, path: &str) -> Option<String> {
    let out = h.sh(&format!("timeout -s KILL 2 stat -c %a \"{path}\""));
    out.status.success().then(|| out.stdout.trim().to_string())
}

#[test]
fn the_kernel_keeps_attributes_and_directory_names_only_while_they_can_be_taken_back() {
    let h = Hosts::start();
    let c = h.extra_mount("c", "host-a", "allow_other,ttl=2");
    let cpath = c.path.display().to_string();
    h.ok("mkdir -m 755 \"$A/d\"; echo x > \"$A/d/f\"; chmod 644 \"$A/d/f\"");
    // Twice: the first fills the mount's cache, the next are served from it, and the kernel
    // is let keep what they served.
    for _ in 0..3 {
        h.ok(&format!("stat \"{cpath}/d\" \"{cpath}/d/f\" > /dev/null"));
    }
    let pid = c.pid().expect("mount C runs");
    signal(pid, libc::SIGSTOP);
    // Mount C's process is stopped: its kernel answers for the directory by itself.
    let kernel = stat_mode_frozen(&h, &format!("{cpath}/d"));
    // B's changes wait for C's lease to run out, and C's kernel stops answering with it.
    // (No panic before SIGCONT: a stopped mount would hold up its own unmount.)
    let changed = h.sh("chmod 700 \"$B/d\"; chmod 600 \"$B/d/f\"");
    let after = stat_mode_frozen(&h, &format!("{cpath}/d"));
    let file_after = stat_mode_frozen(&h, &format!("{cpath}/d/f"));
    signal(pid, libc::SIGCONT);
    assert!(changed.status.success(), "{}", changed.stderr);
    assert_ne!(
        file_after.as_deref(),
        Some("644"),
        "a stopped mount's kernel served a file's attributes after another host changed them"
    );
    assert_eq!(
        kernel.as_deref(),
        Some("755"),
        "the kernel did not answer for a cached directory while its mount was stopped"
    );
    assert_ne!(
        after.as_deref(),
        Some("755"),
        "a stopped mount's kernel served attributes after another host changed them"
    );
    assert_eq!(h.ok(&format!("stat -c %a \"{cpath}/d\"")).trim(), "700");
    assert_eq!(h.ok(&format!("stat -c %a \"{cpath}/d/f\"")).trim(), "600");
    drop(c);
}

#[test]
fn directories_deleted_and_made_again_elsewhere_are_seen_at_once() {
    let h = Hosts::start();
    h.ok("mkdir \"$A/d\"; echo x > \"$A/d/f\"");
    let stat_a = "for i in 1 2 3; do stat \"$A/d\" \"$A/d/f\" > /dev/null; done";
    h.ok(stat_a);
    // Attributes changed elsewhere: mode and size.
    h.ok("chmod 640 \"$B/d/f\"; echo longer > \"$B/d/f\"");
    assert_eq!(h.ok("stat -c '%a %s' \"$A/d/f\"").trim(), "640 7");
    // The directory goes and comes back (another instance) with other contents.
    h.ok(stat_a);
    h.ok("rm -r \"$B/d\"; mkdir \"$B/d\"; echo y > \"$B/d/g\"");
    assert_eq!(h.ok("ls \"$A/d\""), "g\n");
    assert_eq!(h.ok("cat \"$A/d/g\""), "y\n");
    h.ok("test ! -e \"$A/d/f\"");
    assert_eq!(
        h.ok("stat -c %i \"$A/d\""),
        h.ok("stat -c %i \"$B/d\""),
        "host A shows the directory that was deleted"
    );
    // A path through it, first thing after it was made again.
    h.ok("for i in 1 2 3; do stat \"$A/d/g\" > /dev/null; done");
    h.ok("rm -r \"$B/d\"; mkdir \"$B/d\"; mkdir \"$B/d/sub\"");
    h.ok("test -d \"$A/d/sub\"; touch \"$A/d/sub/new\"");
    assert_eq!(h.ok("ls \"$B/d/sub\""), "new\n");
    // Gone for good: "no such file", never a stale handle.
    h.ok(stat_a.replace("\"$A/d/f\"", "\"$A/d/sub\"").as_str());
    h.ok("rm -r \"$B/d\"");
    let out = h.sh("stat \"$A/d\"; stat \"$A/d/sub\"; ls \"$A/d\"");
    assert!(!out.status.success());
    assert!(
        !out.stderr.contains("tale") && out.stderr.matches("No such file").count() == 3,
        "{}",
        out.stderr
    );
}

/// Two hosts make the same directories at once, as `mkdir -p` in scripts started together on
/// both does. The one that loses finds the name taken (EEXIST) by a change its cache may not
/// have heard of yet; its next look at the name must see the directory, not what the cache
/// kept from before (mkdir -p then fails with "File exists").
#[test]
fn a_name_found_taken_is_seen_at_once_by_the_host_that_lost_the_race() {
    let h = Hosts::start();
    let out = h.sh("for i in $(seq 40); do
             stat \"$A/r$i\" 2>/dev/null; stat \"$B/r$i\" 2>/dev/null
             mkdir -p \"$A/r$i/x\" & a=$!
             mkdir -p \"$B/r$i/x\" & b=$!
             wait $a || echo \"A failed at $i\"
             wait $b || echo \"B failed at $i\"
         done");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(h.ok("ls \"$A\" | grep -c '^r'").trim(), "40");
}

/// Reads of `/f` on every node, back to back from `readers` clients per node, until `stop`:
/// for each, when it returned (since `t0`) and what it read.
async fn read_until(
    servers: Vec<String>,
    readers: usize,
    t0: std::time::Instant,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(Duration, String)> {
    use lockfs::client::Client;
    use std::sync::atomic::Ordering;
    let mut tasks = Vec::new();
    for addr in servers.iter().cycle().take(servers.len() * readers) {
        let client = Client::pinned(
            addr.clone(),
            Duration::from_secs(20),
            "reader".into(),
            common::tls::admin(),
        );
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..100_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(data) = client.read("/f").await {
                    let value = String::from_utf8_lossy(&data).into_owned();
                    seen.push((t0.elapsed(), value));
                }
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("a reader"));
    }
    all
}

#[test]
fn no_read_shows_a_write_while_a_cache_may_still_serve_what_it_replaced() {
    use lockfs::client::{ops, Client};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let h = Hosts::start();
    let c = h.extra_mount("c", "host-a", "allow_other,ttl=2");
    let cpath = c.path.display().to_string();
    let servers: Vec<String> = h.cluster.servers().split(',').map(String::from).collect();
    let writer = Client::new(
        servers.clone(),
        Duration::from_secs(20),
        "writer".into(),
        common::tls::admin(),
    );
    let pid = c.pid().expect("mount C runs");
    let (apath, bpath) = (h.a.path.display(), h.b.path.display());
    let mut early = Vec::new();
    // The write: the CLI's put of the file, or a write through mount A; the caches are told
    // of both before they commit (C too, frozen, which cannot acknowledge). Or a rename over
    // the file through mount B, of which the caches hear only once it applied.
    for round in 0..6 {
        let old = format!("old{round}");
        h.ok(&format!("echo -n {old} > \"$A/f\"; printf new > \"$A/g\""));
        assert_eq!(h.ok(&format!("cat \"{cpath}/f\"")), old);
        signal(pid, libc::SIGSTOP);
        let frozen = std::time::Instant::now();
        // C caches f and is frozen: its lease (2 s, renewed every 0.67 s) runs until at least
        // 1.3 s from now, and until then the write below must not show anywhere, since C
        // could still serve what it replaced. Reads race with it on every node: those whose
        // ReadIndex was taken before it committed are answered once it applied.
        let stop = Arc::new(AtomicBool::new(false));
        let (reads, wrote) = common::block_on(async {
            let readers = tokio::spawn(read_until(servers.clone(), 3, frozen, stop.clone()));
            tokio::time::sleep(Duration::from_millis(100)).await;
            let wrote = if round % 3 == 0 {
                let put = ops::put("/f", b"new".to_vec(), 0o644, 0, 0);
                writer
                    .call(put)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else {
                let script = match round % 3 {
                    1 => format!("printf new > '{apath}/f'"),
                    _ => format!("mv '{bpath}/g' '{bpath}/f'"),
                };
                let status = tokio::task::spawn_blocking(move || {
                    std::process::Command::new("sh")
                        .args(["-c", &script])
                        .status()
                })
                .await
                .expect("the writer");
                match status {
                    Ok(s) if s.success() => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            };
            stop.store(true, Ordering::SeqCst);
            (readers.await.expect("the readers"), wrote)
        });
        signal(pid, libc::SIGCONT);
        wrote.expect("the write");
        let bound = Duration::from_millis(1300);
        assert!(
            reads.iter().any(|(_, v)| *v == old),
            "round {round}: no read ran before the write"
        );
        early.extend(
            reads
                .into_iter()
                .filter(|(at, v)| *at < bound && *v != old)
                .map(|(at, v)| format!("round {round}: {v:?} read {at:?} after C froze")),
        );
    }
    drop(c);
    assert!(
        early.is_empty(),
        "reads showed a write while a frozen cache still held the file:\n{}",
        early.join("\n")
    );
}

/// The next modification of `/f` to `size` bytes a watcher reports (a truncation before a write
/// is not it): when (since `t0`) and its index.
async fn next_modified(
    watcher: &mut lockfs::client::watches::Watcher,
    size: u64,
    t0: std::time::Instant,
) -> (Duration, u64) {
    use lockfs::client::watches::WatchItem;
    use lockfs::proto::WatchEvent_Change as Change;
    for _ in 0..100 {
        let item = tokio::time::timeout(Duration::from_secs(60), watcher.next())
            .await
            .expect("an event within a minute")
            .expect("the watch goes on");
        match item {
            WatchItem::Event(e) if e.change == Change::MODIFIED && e.size == size => {
                return (t0.elapsed(), e.index)
            }
            WatchItem::Resync(s) => panic!("a resync at {} instead of the change", s.index),
            _ => {}
        }
    }
    panic!("100 events and none was the change");
}

#[test]
fn a_watcher_hears_of_a_write_only_once_no_cache_can_serve_what_it_replaced() {
    use lockfs::client::session::Session;
    use lockfs::client::{ops, Client};
    use std::sync::Arc;
    let h = Hosts::start();
    let c = h.extra_mount("c", "host-a", "allow_other,ttl=2");
    let cpath = c.path.display().to_string();
    let client = Arc::new(Client::new(
        h.cluster.servers().split(',').map(String::from).collect(),
        Duration::from_secs(20),
        "watcher".into(),
        common::tls::admin(),
    ));
    let b = h.b.path.clone();
    h.ok("echo -n old > \"$A/f\"");
    common::block_on(async {
        let ttl = Duration::from_secs(10);
        let session = Session::open(client.clone(), ttl, ttl, "w", "watcher")
            .await
            .expect("a session");
        let (mut watcher, _) = session.watch("/f", false).await.expect("a watch");
        // Each change a watcher hears of, a read through another host's mount shows: the
        // host's cache dropped what the change replaced before the event left the cluster.
        for round in 0..30 {
            let value = format!("v{round}");
            // B holds the file in its cache (and its kernel's) before the write.
            let cached = b.join("f");
            tokio::task::spawn_blocking(move || std::fs::read(cached))
                .await
                .unwrap()
                .expect("a read on B");
            let writer = {
                let path = h.a.path.join("f");
                let value = value.clone();
                tokio::task::spawn_blocking(move || std::fs::write(path, value))
            };
            next_modified(&mut watcher, value.len() as u64, std::time::Instant::now()).await;
            let seen = std::fs::read_to_string(b.join("f")).unwrap();
            assert_eq!(
                seen, value,
                "round {round}: B read {seen:?} after the event"
            );
            writer.await.unwrap().expect("the write on A");
        }
        // A caching mount C holds the file and is frozen: its lease (2 s, renewed every
        // 0.67 s) runs until at least 1.3 s from then, and until then nobody may hear of the
        // write that replaces the file, since C could still serve what it replaced.
        assert_eq!(h.ok(&format!("cat \"{cpath}/f\"")), "v29");
        let pid = c.pid().expect("mount C runs");
        signal(pid, libc::SIGSTOP);
        let frozen = std::time::Instant::now();
        let wrote = client.call(ops::put("/f", b"new".to_vec(), 0o644, 0, 0));
        let (wrote, (heard, _)) = tokio::join!(wrote, next_modified(&mut watcher, 3, frozen));
        signal(pid, libc::SIGCONT);
        wrote.expect("the write");
        assert!(
            heard >= Duration::from_millis(1300),
            "the watcher heard of the write {heard:?} after C froze, while C's lease ran"
        );
        session.close().await.unwrap();
    });
    drop(c);
}
