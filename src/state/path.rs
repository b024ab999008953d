//! Validation of names and absolute paths. Pure functions of their input: a bad name is refused
//! the same way on every replica, before anything is touched.

use super::StateError;

/// Longest name in bytes, as on Linux (NAME_MAX).
pub const MAX_NAME_LEN: usize = 255;

/// Checks one directory entry name: 1..=255 bytes, no '/' or NUL, not "." or "..".
pub fn validate_name(name: &str) -> Result<(), StateError> {
    if name.is_empty() {
        return Err(StateError::InvalidName("empty name".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StateError::NameTooLong);
    }
    if name == "." || name == ".." {
        return Err(StateError::InvalidName(name.into()));
    }
    if name.contains(['/', '\0']) {
        return Err(StateError::InvalidName(name.escape_debug().to_string()));
    }
    Ok(())
}

/// Splits an absolute path into its validated components; "/" gives none. Empty components
/// ("//") are skipped; "." and ".." are refused rather than interpreted, so a path names one
/// node without any lookup.
pub fn split_path(path: &str) -> Result<Vec<&str>, StateError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(StateError::InvalidArgument(format!(
            "path must be absolute: {}",
            path.escape_debug()
        )));
    };
    let mut components = Vec::new();
    for component in rest.split('/').filter(|c| !c.is_empty()) {
        if component == "." || component == ".." {
            return Err(StateError::InvalidArgument(format!(
                "path may not contain {component:?}: {}",
                path.escape_debug()
            )));
        }
        validate_name(component)?;
        components.push(component);
    }
    Ok(components)
}

/// The absolute path `path` names, written plainly: "/" or "/a/b", without empty components.
pub fn normalize(path: &str) -> Result<String, StateError> {
    let components = split_path(path)?;
    if components.is_empty() {
        return Ok("/".into());
    }
    Ok(components.iter().map(|name| format!("/{name}")).collect())
}

/// The directory that holds a plain path (see [`normalize`]); none for "/".
pub fn parent_of(path: &str) -> Option<&str> {
    match path.rfind('/') {
        _ if path == "/" => None,
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}
