//! Hard links (`links.rs`): several names, one file.

use super::*;
use crate::state::cmd;

fn link(target: &str, at: &str) -> Command {
    Command::Link(cmd::Link {
        target: p(target),
        at: p(at),
    })
}

fn reload(sm: &StateMachine) {
    let rebuilt = StateMachine::from_records(sm.records()).expect("records load");
    assert_eq!(rebuilt.snapshot(), sm.snapshot());
}

#[test]
fn a_change_is_reported_at_every_name_and_a_name_at_itself() {
    let mut sm = sample();
    ok(&mut sm, link("/g", "/d/g2"));
    reload(&sm);
    sm.take_node_events();
    ok(&mut sm, write(p("/g"), 0, b"y", false));
    let paths: Vec<String> = sm.take_node_events().into_iter().map(|e| e.path).collect();
    assert_eq!(paths, ["/g", "/d/g2"]);
    ok(&mut sm, Command::Unlink(cmd::Unlink { at: p("/g") }));
    let events: Vec<(String, NodeChange)> = sm
        .take_node_events()
        .into_iter()
        .map(|e| (e.path, e.change))
        .collect();
    assert_eq!(
        events,
        [
            ("/g".to_string(), NodeChange::Deleted),
            ("/d/g2".to_string(), NodeChange::Attrib)
        ]
    );
    reload(&sm);
    sm.validate().unwrap();
}

#[test]
fn a_file_open_through_one_name_outlives_all_of_them() {
    let mut sm = sample();
    let a = session(&mut sm, "a");
    let h = open(&mut sm, a, "/g");
    let g = stat(&sm, p("/g")).unwrap().instance;
    ok(&mut sm, link("/g", "/h"));
    ok(&mut sm, Command::Unlink(cmd::Unlink { at: p("/g") }));
    ok(&mut sm, Command::Unlink(cmd::Unlink { at: p("/h") }));
    assert_eq!(stat(&sm, Target::Ino(g)).unwrap().links, 0);
    // A nameless file cannot be given a name again.
    refused(
        &mut sm,
        Command::Link(cmd::Link {
            target: Target::Ino(g),
            at: p("/back"),
        }),
        StateError::NotFound,
    );
    reload(&sm);
    ok(
        &mut sm,
        Command::Close(cmd::Close {
            session: a,
            handle: h,
        }),
    );
    assert_eq!(stat(&sm, Target::Ino(g)), Err(StateError::NotFound));
    sm.validate().unwrap();
}

#[test]
fn an_ephemeral_file_goes_with_all_its_names() {
    let mut sm = StateMachine::new();
    ephemeral_dir(&mut sm, "/eph");
    let a = session(&mut sm, "a");
    let (h, _) = open_new(&mut sm, a, "/eph/m");
    ok(&mut sm, link("/eph/m", "/elsewhere"));
    reload(&sm);
    ok(
        &mut sm,
        Command::Close(cmd::Close {
            session: a,
            handle: h,
        }),
    );
    assert_eq!(stat(&sm, p("/elsewhere")), Err(StateError::NotFound));
    assert_eq!(names(&sm, p("/")), ["eph"]);
    assert!(sm.records().iter().all(|(k, _)| !k.starts_with(b"k/")));
    sm.validate().unwrap();
}

#[test]
fn a_file_has_at_most_max_links_names() {
    let mut sm = sample();
    for i in 1..MAX_LINKS {
        ok(&mut sm, link("/g", &format!("/l{i}")));
    }
    assert_eq!(stat(&sm, p("/g")).unwrap().links, MAX_LINKS as u64);
    refused(&mut sm, link("/g", "/one-more"), StateError::TooManyLinks);
    assert_eq!(StateError::TooManyLinks.errno(), 31);
    reload(&sm);
}
