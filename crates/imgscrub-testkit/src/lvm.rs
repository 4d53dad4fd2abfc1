//! LVM2 fixtures (`fixtures/mklvm.sh`) and the lvm2 tools as oracles on an image.

use crate::{fixture, in_ci, require_tool, run, run_ok};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A disk built by `fixtures/mklvm.sh`, with what lvm2 reported while building it.
#[derive(Debug, Clone)]
pub struct LvmFixture {
    pub dir: PathBuf,
    pub image: PathBuf,
    /// (VG, LV, size in bytes, LV UUID)
    pub lvs: Vec<(String, String, u64, String)>,
    /// (offset in the image, size, PV UUID)
    pub pvs: Vec<(u64, u64, String)>,
    /// (VG, VG UUID)
    pub vgs: Vec<(String, String)>,
}

impl LvmFixture {
    /// The bytes LV `vg/lv` must read as (written by the script with dd at lvm2's mapping).
    pub fn content(&self, vg: &str, lv: &str) -> Vec<u8> {
        let p = self.dir.join(format!("{vg}-{lv}.content"));
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }
}

impl LvmFixture {
    /// Copy LV `vg/lv` of the image as it is now into `out`, read with dd at the mapping lvm2
    /// reports (`fixtures/mklvm.sh --extract`): an independent reader of our writes.
    pub fn extract(&self, vg: &str, lv: &str, out: &Path) {
        run_ok(
            Command::new("bash")
                .arg(fixture("mklvm.sh"))
                .arg("--extract")
                .arg(&self.dir)
                .arg(vg)
                .arg(lv)
                .arg(out),
        );
    }
}

/// True when loop devices can be made here (root); otherwise skip, or fail under CI.
fn can_losetup() -> bool {
    let root = run(Command::new("id").arg("-u")).stdout == b"0\n";
    if !root {
        if in_ci() {
            panic!("the LVM2 fixtures need root for losetup in CI");
        }
        eprintln!("SKIP: the LVM2 fixtures need root (losetup)");
    }
    root
}

/// Build LVM2 layout `layout` (`fixtures/mklvm.sh --list`) in `dir`, the root LV holding
/// `rootfs` when given. `None` (skip) when the lvm2 tools or root are missing outside CI.
pub fn make_lvm(layout: &str, dir: &Path, rootfs: Option<&Path>) -> Option<LvmFixture> {
    for t in ["pvcreate", "losetup", "sfdisk", "sgdisk", "mkswap"] {
        require_tool(t)?;
    }
    if !can_losetup() {
        return None;
    }
    let mut cmd = Command::new("bash");
    cmd.arg(fixture("mklvm.sh")).arg(layout).arg(dir);
    if let Some(r) = rootfs {
        cmd.arg(r);
    }
    run_ok(&mut cmd);
    let manifest = std::fs::read_to_string(dir.join("manifest"))
        .unwrap_or_else(|e| panic!("mklvm.sh wrote no manifest: {e}"));
    let num = |s: &str| -> u64 {
        s.parse()
            .unwrap_or_else(|e| panic!("bad number {s:?} in the manifest: {e}"))
    };
    let mut f = LvmFixture {
        dir: dir.to_owned(),
        image: dir.join("disk.img"),
        lvs: Vec::new(),
        pvs: Vec::new(),
        vgs: Vec::new(),
    };
    for line in manifest.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["lv", vg, lv, size, uuid] => {
                f.lvs
                    .push((vg.to_string(), lv.to_string(), num(size), uuid.to_string()))
            }
            ["pv", off, size, uuid] => f.pvs.push((num(off), num(size), uuid.to_string())),
            ["vg", vg, uuid] => f.vgs.push((vg.to_string(), uuid.to_string())),
            _ => panic!("bad manifest line {line:?}"),
        }
    }
    Some(f)
}

/// Run an lvm2 command (`lvs`, `vgs`, `pvck`…, with `args`) on the PVs of `image` at
/// `pvs` (offset, size): each is attached to a loop device of its own and lvm2 is told to
/// look at those only. `{PV0}`, `{PV1}`… in `args` are replaced by the loop devices. Returns
/// (success, stdout, stderr); the loop devices are detached before returning.
pub fn lvm_on_image(
    image: &Path,
    pvs: &[(u64, u64)],
    cmd: &str,
    args: &[&str],
) -> (bool, String, String) {
    let mut loops: Vec<String> = Vec::new();
    for (off, size) in pvs {
        let l = run_ok(
            Command::new("losetup")
                .args([
                    "-f",
                    "--show",
                    "-r",
                    "-o",
                    &off.to_string(),
                    "--sizelimit",
                    &size.to_string(),
                ])
                .arg(image),
        );
        loops.push(l.trim().to_owned());
    }
    let accept: String = loops.iter().map(|l| format!("\"a|^{l}$|\",")).collect();
    let cfg = format!(
        "devices{{filter=[{accept}\"r|.*|\"] use_devicesfile=0 obtain_device_list_from_udev=0}} \
         activation{{udev_sync=0 udev_rules=0 monitoring=0}} backup{{backup=0 archive=0}} \
         global{{event_activation=0}}"
    );
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            let mut a = a.to_string();
            for (i, l) in loops.iter().enumerate() {
                a = a.replace(&format!("{{PV{i}}}"), l);
            }
            a
        })
        .collect();
    let o = run(crate::tool(cmd)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .args(&args)
        .arg("--config")
        .arg(&cfg));
    for l in &loops {
        let _ = Command::new("losetup").arg("-d").arg(l).status();
    }
    let stderr: String = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| {
            !(l.contains("device-mapper")
                || l.contains("devmapper")
                || l.contains("mapper/control"))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr,
    )
}
