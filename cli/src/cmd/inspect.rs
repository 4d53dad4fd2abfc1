//! `imgscrub inspect IMAGE [--json]`.

use super::human_size;
use anyhow::{Context, Result};
use imgscrub::{Format, Image, Inspection, OpenOptions};
use std::path::PathBuf;

/// Arguments of `imgscrub inspect`.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  imgscrub inspect disk.qcow2
      format, size, backing chain, then one row per partition with its filesystem
  imgscrub inspect --json disk.img > report.json
      the same as JSON (schema: docs/inspect-json.md)
  imgscrub inspect --json disk.qcow2 | jq -r '.partitions[] | select(.filesystem.type == \"ext4\") | .part_uuid'
      the PARTUUIDs of the ext4 partitions

The image is opened read-only; nothing is ever written.")]
pub struct Args {
    /// The disk image (raw or qcow2; detected by its first bytes).
    pub image: PathBuf,
    /// Print the inspection as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Do not detect the format: read the image as `raw`, `qcow2`, `vmdk` or `vhd`.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,
}

/// Run `inspect`.
pub fn run(args: &Args) -> Result<()> {
    let img = Image::open(
        &args.image,
        OpenOptions {
            write: false,
            format: args.format,
        },
    )?;
    let report = img
        .inspect()
        .with_context(|| args.image.display().to_string())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// The human-readable report.
pub fn render(r: &Inspection) -> String {
    let mut out = String::new();
    out += &format!(
        "image:  {} ({}, {} virtual)\n",
        r.path,
        r.format,
        human_size(r.virtual_size)
    );
    for b in &r.backing_chain {
        let f = b.format.map_or("unreadable".to_string(), |f| f.to_string());
        out += &format!("backing: {} ({f})\n", b.path);
    }
    let t = &r.partition_table;
    out += &match t.kind {
        "gpt" => format!(
            "table:  GPT, disk GUID {}, {}-byte sectors{}\n",
            t.id.as_deref().unwrap_or("?"),
            t.sector_size.unwrap_or(512),
            if t.read_only {
                " (from the backup header)"
            } else {
                ""
            }
        ),
        "mbr" => format!(
            "table:  MBR, disk signature {}\n",
            t.id.as_deref().unwrap_or("?")
        ),
        _ => "table:  none (the whole disk is one filesystem)\n".to_string(),
    };
    let mut rows = vec![
        [
            "#",
            "START",
            "SIZE",
            "TYPE",
            "NAME",
            "FILESYSTEM",
            "LABEL",
            "UUID",
        ]
        .map(String::from),
    ];
    for p in &r.partitions {
        let ty = p
            .type_name
            .clone()
            .or_else(|| p.type_id.clone())
            .unwrap_or_default();
        let (fs, label, uuid) = match &p.filesystem {
            Some(f) => {
                let fs = match &f.version {
                    Some(v) if f.fs_type == "vfat" => format!("{} {v}", f.fs_type),
                    _ => f.fs_type.clone(),
                };
                (
                    fs,
                    f.label.clone().unwrap_or_default(),
                    f.uuid.clone().unwrap_or_default(),
                )
            }
            None if p.extended => ("(extended)".to_string(), String::new(), String::new()),
            None => ("?".to_string(), String::new(), String::new()),
        };
        let boot = if p.bootable { "*" } else { "" };
        rows.push([
            format!("{}{boot}", p.index),
            human_size(p.start),
            human_size(p.size),
            ty,
            p.name.clone().unwrap_or_default(),
            fs,
            label,
            uuid,
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    out += "\n";
    for row in &rows {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i == 1 || i == 2 {
                line += &format!("{c:>w$}  ");
            } else {
                line += &format!("{c:<w$}  ");
            }
        }
        out += line.trim_end();
        out += "\n";
    }
    if r.partitions.iter().any(|p| p.bootable) {
        out += "(* bootable)\n";
    }
    for p in &r.partitions {
        if let Some(x) = p.filesystem.as_ref().and_then(|f| f.xfs.as_ref()) {
            out += &format!(
                "\nxfs on {}: v{}, {}-byte blocks, {}-byte sectors, {}-byte inodes, \
                 {}-byte directory blocks, {} AGs of {} blocks, log {}, {} free\n  \
                 features: {}{}\n",
                if p.index == 0 {
                    "the whole disk".to_string()
                } else {
                    format!("partition {}", p.index)
                },
                x.version,
                x.block_size,
                x.sector_size,
                x.inode_size,
                x.dir_block_size,
                x.ag_count,
                x.ag_blocks,
                x.log,
                human_size(x.free_bytes),
                x.features.join(", "),
                match (&x.read_only_reason, x.writable) {
                    (_, true) => String::new(),
                    (Some(r), false) => format!("\n  read-only: {r}"),
                    (None, false) => "\n  read-only".to_string(),
                },
            );
        }
    }
    for vg in &r.volume_groups {
        let pvs: Vec<String> = vg
            .pvs
            .iter()
            .map(|p| {
                let place = match (p.in_image, p.partition) {
                    (false, _) => "not in this image".to_owned(),
                    (true, Some(n)) => format!("partition {n}"),
                    (true, None) => "the whole disk".to_owned(),
                };
                let free = p
                    .free_extents
                    .map_or(String::new(), |f| format!(", {f} free extents"));
                format!("{} {} ({place}{free})", p.key, p.uuid)
            })
            .collect();
        out += &format!(
            "
lvm VG {}: UUID {}, seqno {}, {} extents
  PVs: {}
",
            vg.name,
            vg.uuid,
            vg.seqno,
            human_size(vg.extent_size),
            pvs.join(", ")
        );
        for lv in vg.lvs.iter().filter(|l| l.visible) {
            let what = match (&lv.refused, &lv.filesystem) {
                (Some(r), _) => format!("refused: {r}"),
                (None, Some(f)) => {
                    let mut s = f.fs_type.clone();
                    if let Some(l) = &f.label {
                        s += &format!(" LABEL={l}");
                    }
                    if let Some(u) = &f.uuid {
                        s += &format!(" UUID={u}");
                    }
                    s
                }
                (None, None) => "?".to_owned(),
            };
            out += &format!(
                "  LV {} {} ({} segment{}, UUID {}): {what}\n",
                lv.name,
                human_size(lv.size),
                lv.segments.len(),
                if lv.segments.len() == 1 { "" } else { "s" },
                lv.uuid
            );
        }
    }
    if let Some(os) = &r.os {
        let root = match (&os.root_lv, os.root_partition) {
            (Some(lv), _) => format!("LV {lv}"),
            (None, Some(n)) => format!("partition {n}"),
            (None, None) => "the whole disk".to_owned(),
        };
        out += &format!(
            "\nos:     {} on {root}; init {:?}{}{}\n",
            os.info.describe(),
            os.info.init,
            match &os.info.selinux {
                Some(m) => format!("; SELinux {m:?}"),
                None => String::new(),
            },
            if os.info.cloud_init {
                "; cloud-init"
            } else {
                ""
            },
        );
    }
    if !r.warnings.is_empty() {
        out += "\n";
        for w in &r.warnings {
            out += &format!("warning: {w}\n");
        }
    }
    out
}
