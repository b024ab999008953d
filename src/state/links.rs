//! Hard links: a file may have more than one name, as link(2) gives it, and everything about
//! it (data, attributes, ephemerality, locks, handles) belongs to the file, not to a name.
//!
//! A node's record holds its first name (parent, name). Its other names are one record of
//! their own (`k/<instance>`), so a file with one name, the usual case, stores nothing more.
//! When the first name goes, the next one takes its place. A file whose last name goes
//! becomes an orphan or is deleted (`orphan.rs`). Directories have exactly one name.
//!
//! A change to the file is reported at each of its names, so a watch of any of them sees it;
//! a name that comes or goes is reported at that name only.

use super::node::Node;
use super::tree::{StateMachine, ROOT};
use super::{Attr, NodeChange, NodeEvent, Outcome, StateError, Target};

/// Most names a file may have (link(2) answers EMLINK beyond): each is kept with the file.
pub const MAX_LINKS: usize = 256;

impl StateMachine {
    /// The attributes of live node `ino`, its link count included.
    pub(super) fn attr_of(&self, ino: u64) -> Attr {
        let mut attr = self.nodes[&ino].attr(ino);
        attr.links += self.extra_names.get(&ino).map_or(0, |n| n.len() as u64);
        attr
    }

    /// Every name of node `ino`: its first, then the others; none for an orphan.
    pub(super) fn names_of(&self, ino: u64) -> Vec<(u64, String)> {
        let node = &self.nodes[&ino];
        let mut names = Vec::new();
        if ino != ROOT && node.parent != 0 {
            names.push((node.parent, node.name.clone()));
        }
        if let Some(extra) = self.extra_names.get(&ino) {
            names.extend(extra.iter().cloned());
        }
        names
    }

    /// link(2): a new name `at` for the file `target`.
    pub(super) fn link(
        &mut self,
        target: &Target,
        at: &Target,
        now: u64,
    ) -> Result<Outcome, StateError> {
        let ino = self.lookup(target)?;
        if self.node(ino)?.is_dir() {
            return Err(StateError::NotPermitted);
        }
        // Linux refuses to give a name back to a file that lost its last one.
        if self.is_orphan(ino) {
            return Err(StateError::NotFound);
        }
        let slot = self.resolve_slot(at)?;
        if slot.existing.is_some() {
            return Err(StateError::AlreadyExists);
        }
        if self.names_of(ino).len() >= MAX_LINKS {
            return Err(StateError::TooManyLinks);
        }
        self.dir_mut(slot.parent, now)
            .children
            .insert(slot.name.clone(), ino);
        self.extra_names
            .entry(ino)
            .or_default()
            .push((slot.parent, slot.name.clone()));
        self.dirty_extra_names.insert(ino);
        self.node_mut(ino).ctime_ns = now;
        self.name_event(ino, slot.parent, &slot.name, NodeChange::Created);
        self.node_event(ino, NodeChange::Attrib);
        Ok(Outcome::Attr(self.attr_of(ino)))
    }

    /// Takes the name `name` in `parent` away from file `ino`. The file's last name makes it
    /// an orphan or deletes it (`orphan.rs`).
    pub(super) fn remove_name(&mut self, ino: u64, parent: u64, name: &str, now: u64) {
        if self.names_of(ino).len() <= 1 {
            self.unlink_file(ino, now);
            return;
        }
        self.name_event(ino, parent, name, NodeChange::Deleted);
        self.dir_mut(parent, now).children.remove(name);
        self.forget_name(ino, parent, name);
        self.node_mut(ino).ctime_ns = now;
        self.node_event(ino, NodeChange::Attrib);
    }

    /// Drops (`parent`, `name`) from the names `ino`'s records hold (not from the directory);
    /// the first name's place goes to the next name.
    fn forget_name(&mut self, ino: u64, parent: u64, name: &str) {
        let node = &self.nodes[&ino];
        let first = node.parent == parent && node.name == name;
        let extra = self.extra_names.entry(ino).or_default();
        if first {
            let (p, n) = extra.remove(0);
            let node = self.node_mut(ino);
            node.parent = p;
            node.name = n;
        } else {
            extra.retain(|(p, n)| !(*p == parent && n == name));
        }
        if self.extra_names.get(&ino).is_some_and(Vec::is_empty) {
            self.extra_names.remove(&ino);
        }
        self.dirty_extra_names.insert(ino);
    }

    /// Moves the name (`from_parent`, `from_name`) of node `ino` to (`parent`, `name`) in the
    /// records; the directories' entries are the caller's.
    pub(super) fn move_name(
        &mut self,
        ino: u64,
        (from_parent, from_name): (u64, &str),
        (parent, name): (u64, &str),
    ) {
        let node = &self.nodes[&ino];
        if node.parent == from_parent && node.name == from_name {
            let node: &mut Node = self.node_mut(ino);
            node.parent = parent;
            node.name = name.to_owned();
            return;
        }
        if let Some(extra) = self.extra_names.get_mut(&ino) {
            for entry in extra.iter_mut() {
                if entry.0 == from_parent && entry.1 == from_name {
                    *entry = (parent, name.to_owned());
                }
            }
            self.dirty_extra_names.insert(ino);
        }
    }

    /// Removes every name but the first of node `ino`, for a node being deleted.
    pub(super) fn drop_extra_names(&mut self, ino: u64, now: u64) {
        if let Some(extra) = self.extra_names.remove(&ino) {
            for (parent, name) in extra {
                self.dir_mut(parent, now).children.remove(&name);
            }
            self.dirty_extra_names.insert(ino);
        }
    }

    /// Reports a change of one name of node `ino`: it came (`Created`) or went (`Deleted`).
    pub(super) fn name_event(&mut self, ino: u64, parent: u64, name: &str, change: NodeChange) {
        let path = match self.path_of(parent).as_str() {
            "/" => format!("/{name}"),
            p => format!("{p}/{name}"),
        };
        let event = NodeEvent {
            index: self.applying,
            path,
            instance: ino,
            parent,
            name: name.to_owned(),
            kind: self.nodes[&ino].kind,
            by: self.applying_for,
            change,
        };
        self.node_events.push(event);
    }
}
