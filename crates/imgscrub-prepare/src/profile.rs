//! Profiles: TOML documents with `extends`, an operation selection, a distro requirement
//! and declarative actions (see docs/profiles.md). Built-ins live in `profiles/` at the
//! repository root and are embedded.

use crate::action::ActionSpec;
use crate::error::{PrepareError, Result};
use crate::inspect::Family;
use crate::ops::Selection;
use serde::{Deserialize, Serialize};

/// Built-in profiles: (name, TOML).
const BUILTINS: &[(&str, &str)] = &[
    ("linux", include_str!("../../../profiles/linux.toml")),
    (
        "lx-common",
        include_str!("../../../profiles/lx-common.toml"),
    ),
    (
        "lx-centos",
        include_str!("../../../profiles/lx-centos.toml"),
    ),
    (
        "lx-debian",
        include_str!("../../../profiles/lx-debian.toml"),
    ),
    (
        "lx-ubuntu",
        include_str!("../../../profiles/lx-ubuntu.toml"),
    ),
    (
        "lx-alpine",
        include_str!("../../../profiles/lx-alpine.toml"),
    ),
];

/// Deepest `extends` chain.
const MAX_DEPTH: usize = 16;

/// A profile file as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// Name (defaults to the file name for user profiles).
    #[serde(default)]
    pub name: Option<String>,
    /// One-line description.
    #[serde(default)]
    pub description: Option<String>,
    /// Internal building block (not offered to users on its own).
    #[serde(default)]
    pub internal: bool,
    /// Profiles whose actions run first, in order.
    #[serde(default)]
    pub extends: Vec<String>,
    /// The guest must be of one of these families, unless forced.
    #[serde(default)]
    pub requires_family: Vec<Family>,
    /// Operation selection (`["defaults"]`, `["defaults", "-logfiles"]`…).
    #[serde(default)]
    pub operations: Option<Vec<String>>,
    /// Actions.
    #[serde(default)]
    pub action: Vec<ActionSpec>,
}

/// One action together with the profile it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileAction {
    /// Name of the profile that declared it.
    pub profile: String,
    /// The action.
    pub spec: ActionSpec,
}

/// A resolved profile: its `extends` chain flattened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Profiles included, in run order (bases first, each once), this one last.
    pub chain: Vec<String>,
    /// Families accepted (from the nearest profile in the chain that says; empty = any).
    pub requires_family: Vec<Family>,
    /// Operation selection of the nearest profile that has one; `None` = no operations.
    pub operations: Option<Selection>,
    /// Actions of the whole chain, in run order.
    pub actions: Vec<ProfileAction>,
}

/// Names of the built-in profiles users can choose (internal ones omitted).
pub fn builtin_names() -> Vec<&'static str> {
    BUILTINS
        .iter()
        .filter(|(_, text)| {
            toml::from_str::<ProfileFile>(text)
                .map(|f| !f.internal)
                .unwrap_or(false)
        })
        .map(|(n, _)| *n)
        .collect()
}

/// The TOML text of a built-in profile.
pub fn builtin_text(name: &str) -> Option<&'static str> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Read a profile file from the host (at most 1 MiB).
fn read_host_profile(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let err = |source| PrepareError::ProfileIo {
        path: path.display().to_string(),
        source,
    };
    let f = std::fs::File::open(path).map_err(err)?;
    let mut text = String::new();
    f.take(1 << 20).read_to_string(&mut text).map_err(err)?;
    Ok(text)
}

fn parse_file(name: &str, text: &str) -> Result<ProfileFile> {
    toml::from_str::<ProfileFile>(text).map_err(|e| PrepareError::Profile {
        name: name.to_string(),
        message: e.to_string(),
    })
}

impl Profile {
    /// A built-in profile by name (`linux`, `lx-centos`, `lx-debian`, `lx-ubuntu`,
    /// `lx-alpine`; `lx-common` is internal but can be loaded too).
    pub fn builtin(name: &str) -> Result<Profile> {
        let text = builtin_text(name).ok_or_else(|| PrepareError::UnknownProfile(name.into()))?;
        Self::resolve(name, text, &|n| {
            builtin_text(n)
                .map(str::to_string)
                .ok_or_else(|| PrepareError::UnknownProfile(n.into()))
        })
    }

    /// Parse a user profile. `extends` names are looked up with `base`, which returns a
    /// profile's TOML text (use [`Profile::builtin_resolver`] for the built-ins).
    pub fn from_toml(
        default_name: &str,
        text: &str,
        base: &dyn Fn(&str) -> Result<String>,
    ) -> Result<Profile> {
        Self::resolve(default_name, text, base)
    }

    /// What `--profile X` means: a built-in name, or else a TOML file on the host. A
    /// file's `extends` may name built-ins or other files (relative to its directory,
    /// `.toml` optional). Its default name is the file stem.
    pub fn load(spec: &str) -> Result<Profile> {
        if builtin_text(spec).is_some() {
            return Self::builtin(spec);
        }
        let path = std::path::Path::new(spec);
        let text = read_host_profile(path)?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.to_string());
        let dir = path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        Self::resolve(&stem, &text, &|name| {
            if let Some(t) = builtin_text(name) {
                return Ok(t.to_string());
            }
            let mut p = dir.join(name);
            if !p.exists() && p.extension().is_none() {
                p.set_extension("toml");
            }
            read_host_profile(&p)
        })
    }

    /// A resolver for [`Profile::from_toml`] that knows the built-ins.
    pub fn builtin_resolver(name: &str) -> Result<String> {
        builtin_text(name)
            .map(str::to_string)
            .ok_or_else(|| PrepareError::UnknownProfile(name.into()))
    }

    fn resolve(
        default_name: &str,
        text: &str,
        base: &dyn Fn(&str) -> Result<String>,
    ) -> Result<Profile> {
        let top = parse_file(default_name, text)?;
        let name = top.name.clone().unwrap_or_else(|| default_name.to_string());
        let mut chain = Vec::new();
        let mut actions = Vec::new();
        let mut requires: Option<Vec<Family>> = None;
        let mut operations: Option<Selection> = None;
        let mut stack = Vec::new();
        Self::collect(
            &name,
            &top,
            base,
            &mut stack,
            &mut chain,
            &mut actions,
            &mut requires,
            &mut operations,
        )?;
        Ok(Profile {
            description: top.description.clone().unwrap_or_default(),
            name,
            chain,
            requires_family: requires.unwrap_or_default(),
            operations,
            actions,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn collect(
        name: &str,
        file: &ProfileFile,
        base: &dyn Fn(&str) -> Result<String>,
        stack: &mut Vec<String>,
        chain: &mut Vec<String>,
        actions: &mut Vec<ProfileAction>,
        requires: &mut Option<Vec<Family>>,
        operations: &mut Option<Selection>,
    ) -> Result<()> {
        if stack.iter().any(|s| s == name) || stack.len() >= MAX_DEPTH {
            return Err(PrepareError::ExtendsCycle(name.to_string()));
        }
        if chain.iter().any(|c| c == name) {
            return Ok(());
        }
        stack.push(name.to_string());
        for b in &file.extends {
            if chain.iter().any(|c| c == b) {
                continue;
            }
            let text = base(b)?;
            let bf = parse_file(b, &text)?;
            let bname = bf.name.clone().unwrap_or_else(|| b.clone());
            Self::collect(
                &bname, &bf, base, stack, chain, actions, requires, operations,
            )?;
        }
        stack.pop();
        chain.push(name.to_string());
        // The nearest (most derived) profile wins: later in the walk overrides earlier.
        if !file.requires_family.is_empty() {
            *requires = Some(file.requires_family.clone());
        }
        if let Some(ops) = &file.operations {
            let sel = Selection::parse(&ops.join(","))?;
            *operations = Some(match operations.take() {
                Some(mut prev) if sel.only_removals() => {
                    prev.extend(&sel);
                    prev
                }
                _ => sel,
            });
        }
        for a in &file.action {
            actions.push(ProfileAction {
                profile: name.to_string(),
                spec: a.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_resolve() {
        for (name, _) in BUILTINS {
            let p = Profile::builtin(name).unwrap();
            assert_eq!(p.name, *name);
        }
        let c = Profile::builtin("lx-centos").unwrap();
        assert_eq!(c.chain, vec!["linux", "lx-common", "lx-centos"]);
        assert_eq!(c.requires_family, vec![Family::Redhat]);
        assert!(c.operations.is_some());
        assert_eq!(
            builtin_names(),
            vec!["linux", "lx-centos", "lx-debian", "lx-ubuntu", "lx-alpine"]
        );
    }

    #[test]
    fn user_profile_extends_builtin() {
        let text = r#"
name = "site"
extends = ["lx-centos"]
operations = ["-logfiles"]
[[action]]
kind = "delete"
path = "/var/lib/consul/node-id"
"#;
        let p = Profile::from_toml("site.toml", text, &Profile::builtin_resolver).unwrap();
        assert_eq!(p.chain.last().map(String::as_str), Some("site"));
        assert_eq!(p.requires_family, vec![Family::Redhat]);
        let ops = p.operations.unwrap().resolve();
        assert!(!ops.contains("logfiles") && ops.contains("machine-id"));
        assert_eq!(p.actions.last().unwrap().profile, "site");
    }

    #[test]
    fn load_builtin_or_file() {
        assert_eq!(Profile::load("lx-alpine").unwrap().name, "lx-alpine");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("base.toml"),
            "extends = [\"linux\"]\n[[action]]\nkind = \"delete\"\npath = \"/a\"\n",
        )
        .unwrap();
        let site = dir.path().join("site.toml");
        std::fs::write(&site, "extends = [\"base\"]\n").unwrap();
        let p = Profile::load(site.to_str().unwrap()).unwrap();
        assert_eq!(p.name, "site");
        assert_eq!(p.chain, vec!["linux", "base", "site"]);
        assert_eq!(p.actions.len(), 1);
        assert!(matches!(
            Profile::load("/nonexistent/x.toml"),
            Err(PrepareError::ProfileIo { .. })
        ));
    }

    #[test]
    fn cycles_and_unknowns() {
        let a = "extends = [\"b\"]";
        let r = Profile::from_toml("a", a, &|n| match n {
            "b" => Ok("extends = [\"a\"]".to_string()),
            _ => Ok(String::new()),
        });
        assert!(matches!(r, Err(PrepareError::ExtendsCycle(_))));
        assert!(matches!(
            Profile::builtin("nope"),
            Err(PrepareError::UnknownProfile(_))
        ));
        let bad = "bogus_key = 1";
        assert!(Profile::from_toml("x", bad, &Profile::builtin_resolver).is_err());
    }
}
