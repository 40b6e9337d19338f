//! Per-device configuration, as serde structs and as the command-line syntax
//! (`--disk path=IMG,readonly=on`, `--net tap=NAME,mac=..`, `--vsock cid=3,socket=PATH`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A malformed device option, naming the offending key or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown key `{key}` (expected one of: {expected})")]
    UnknownKey { key: String, expected: &'static str },
    #[error("bad value `{value}` for `{key}`: expected {expected}")]
    BadValue {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("missing `{0}=`")]
    Missing(&'static str),
    #[error("`{0}` given twice")]
    Duplicate(String),
}

/// Split `a=1,b=2` into pairs; a leading item without `=` is returned under `bare_key`.
fn pairs<'a>(
    s: &'a str,
    bare_key: Option<&'a str>,
) -> Result<Vec<(&'a str, &'a str)>, ConfigError> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for (i, item) in s.split(',').enumerate() {
        if item.is_empty() {
            continue;
        }
        let (k, v) = match (item.split_once('='), bare_key) {
            (Some(kv), _) => kv,
            (None, Some(bare)) if i == 0 => (bare, item),
            (None, _) => {
                return Err(ConfigError::UnknownKey {
                    key: item.to_string(),
                    expected: "key=value",
                })
            }
        };
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(ConfigError::Duplicate(k.to_string()));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(ConfigError::BadValue {
            key,
            value: v.into(),
            expected: "on or off",
        }),
    }
}

/// Image format of a disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    #[default]
    Raw,
    Qcow2,
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        })
    }
}

/// A virtio-blk disk: `path=IMG[,readonly=on][,serial=ID][,format=raw]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub readonly: bool,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub format: DiskFormat,
    /// Open a raw image with O_DIRECT: guest I/O bypasses the host's page cache.
    #[serde(default)]
    pub direct: bool,
}

impl FromStr for DiskConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let mut path = None;
        let mut cfg = DiskConfig {
            path: PathBuf::new(),
            readonly: false,
            serial: None,
            format: DiskFormat::Raw,
            direct: false,
        };
        for (k, v) in pairs(s, Some("path"))? {
            match k {
                "path" if !v.is_empty() => path = Some(PathBuf::from(v)),
                "path" => {
                    return Err(ConfigError::BadValue {
                        key: "path",
                        value: v.into(),
                        expected: "a file name",
                    })
                }
                "readonly" => cfg.readonly = parse_bool("readonly", v)?,
                "direct" => cfg.direct = parse_bool("direct", v)?,
                "serial" if v.len() <= 20 && v.is_ascii() => cfg.serial = Some(v.into()),
                "serial" => {
                    return Err(ConfigError::BadValue {
                        key: "serial",
                        value: v.into(),
                        expected: "at most 20 ASCII characters",
                    })
                }
                "format" => {
                    cfg.format = match v {
                        "raw" => DiskFormat::Raw,
                        "qcow2" => DiskFormat::Qcow2,
                        _ => {
                            return Err(ConfigError::BadValue {
                                key: "format",
                                value: v.into(),
                                expected: "raw or qcow2",
                            })
                        }
                    }
                }
                _ => {
                    return Err(ConfigError::UnknownKey {
                        key: k.into(),
                        expected: "path, readonly, serial, format, direct",
                    })
                }
            }
        }
        cfg.path = path.ok_or(ConfigError::Missing("path"))?;
        if cfg.direct && cfg.format != DiskFormat::Raw {
            return Err(ConfigError::BadValue {
                key: "direct",
                value: "on".into(),
                expected: "off for qcow2 images (O_DIRECT is for raw images)",
            });
        }
        Ok(cfg)
    }
}

/// A MAC address, written `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::BadValue {
            key: "mac",
            value: s.into(),
            expected: "six hex bytes like 52:54:00:12:34:56",
        };
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut mac {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A virtio-net device on a TAP interface: `tap=NAME[,mac=52:54:00:..]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    pub tap: String,
    #[serde(default)]
    pub mac: Option<MacAddr>,
}

impl FromStr for NetConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let mut tap = None;
        let mut mac = None;
        for (k, v) in pairs(s, None)? {
            match k {
                // IFNAMSIZ is 16 including the terminating NUL.
                "tap" if !v.is_empty() && v.len() < 16 && !v.contains(['/', ' ']) => {
                    tap = Some(v.to_string())
                }
                "tap" => {
                    return Err(ConfigError::BadValue {
                        key: "tap",
                        value: v.into(),
                        expected: "an interface name of 1 to 15 characters",
                    })
                }
                "mac" => mac = Some(v.parse()?),
                _ => {
                    return Err(ConfigError::UnknownKey {
                        key: k.into(),
                        expected: "tap, mac",
                    })
                }
            }
        }
        Ok(NetConfig {
            tap: tap.ok_or(ConfigError::Missing("tap"))?,
            mac,
        })
    }
}

/// A virtio-vsock device: `cid=3,socket=PATH` (host side: a Unix socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    pub cid: u32,
    pub socket: PathBuf,
}

impl FromStr for VsockConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let mut cid = None;
        let mut socket = None;
        for (k, v) in pairs(s, None)? {
            match k {
                "cid" => {
                    let c: u32 = v
                        .parse()
                        .ok()
                        .filter(|c| (3..u32::MAX).contains(c))
                        .ok_or_else(|| ConfigError::BadValue {
                            key: "cid",
                            value: v.into(),
                            expected: "a number from 3 to 4294967294",
                        })?;
                    cid = Some(c);
                }
                "socket" if !v.is_empty() => socket = Some(PathBuf::from(v)),
                "socket" => {
                    return Err(ConfigError::BadValue {
                        key: "socket",
                        value: v.into(),
                        expected: "a path",
                    })
                }
                _ => {
                    return Err(ConfigError::UnknownKey {
                        key: k.into(),
                        expected: "cid, socket",
                    })
                }
            }
        }
        Ok(VsockConfig {
            cid: cid.ok_or(ConfigError::Missing("cid"))?,
            socket: socket.ok_or(ConfigError::Missing("socket"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_json_keys_are_rejected() {
        assert!(serde_json::from_str::<DiskConfig>(r#"{"path":"/d","colour":1}"#).is_err());
        assert!(serde_json::from_str::<NetConfig>(r#"{"tap":"t0","speed":9}"#).is_err());
        assert!(serde_json::from_str::<VsockConfig>(r#"{"cid":3,"socket":"/s","x":0}"#).is_err());
        assert!(serde_json::from_str::<DiskConfig>(r#"{"path":"/d"}"#).is_ok());
        let balloon = r#"{"deflate_on_oom":true,"free_page_reporting":false,"hinting":true}"#;
        assert!(serde_json::from_str::<crate::balloon::BalloonConfig>(balloon).is_err());
    }

    #[test]
    fn disk_syntax() {
        let d: DiskConfig = "path=/img/a.raw,readonly=on,format=raw,serial=disk0"
            .parse()
            .unwrap();
        assert_eq!(d.path, PathBuf::from("/img/a.raw"));
        assert!(d.readonly);
        assert_eq!(d.serial.as_deref(), Some("disk0"));
        let d: DiskConfig = "b.img".parse().unwrap();
        assert_eq!(
            (d.path, d.readonly, d.format),
            (PathBuf::from("b.img"), false, DiskFormat::Raw)
        );
        assert_eq!(
            "path=a,readonly=maybe".parse::<DiskConfig>(),
            Err(ConfigError::BadValue {
                key: "readonly",
                value: "maybe".into(),
                expected: "on or off"
            })
        );
        assert!(
            matches!("path=a,size=3".parse::<DiskConfig>(), Err(ConfigError::UnknownKey { key, .. }) if key == "size")
        );
        assert_eq!(
            "readonly=on".parse::<DiskConfig>(),
            Err(ConfigError::Missing("path"))
        );
        assert_eq!(
            "path=a,path=b".parse::<DiskConfig>(),
            Err(ConfigError::Duplicate("path".into()))
        );
        assert!(matches!(
            "path=a,format=vmdk".parse::<DiskConfig>(),
            Err(ConfigError::BadValue { key: "format", .. })
        ));
        let json = serde_json::to_string(&d_roundtrip()).unwrap();
        assert_eq!(
            serde_json::from_str::<DiskConfig>(&json).unwrap(),
            d_roundtrip()
        );
    }

    fn d_roundtrip() -> DiskConfig {
        "path=x,format=qcow2".parse().unwrap()
    }

    #[test]
    fn direct_is_for_raw_images() {
        let d: DiskConfig = "path=x,direct=on".parse().unwrap();
        assert!(d.direct);
        assert!(!"path=x".parse::<DiskConfig>().unwrap().direct);
        assert!(matches!(
            "path=x,format=qcow2,direct=on".parse::<DiskConfig>(),
            Err(ConfigError::BadValue { key: "direct", .. })
        ));
    }

    #[test]
    fn net_and_vsock_syntax() {
        let n: NetConfig = "tap=tap0,mac=52:54:00:12:34:5f".parse().unwrap();
        assert_eq!(n.tap, "tap0");
        assert_eq!(n.mac, Some(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x5f])));
        assert_eq!(n.mac.unwrap().to_string(), "52:54:00:12:34:5f");
        assert!(matches!(
            "tap=t,mac=52:54:00".parse::<NetConfig>(),
            Err(ConfigError::BadValue { key: "mac", .. })
        ));
        assert_eq!(
            "mac=52:54:00:12:34:56".parse::<NetConfig>(),
            Err(ConfigError::Missing("tap"))
        );
        assert!(matches!(
            "tap=averyveryverylongname".parse::<NetConfig>(),
            Err(ConfigError::BadValue { key: "tap", .. })
        ));

        let v: VsockConfig = "cid=3,socket=/tmp/v.sock".parse().unwrap();
        assert_eq!((v.cid, v.socket), (3, PathBuf::from("/tmp/v.sock")));
        assert!(matches!(
            "cid=2,socket=/x".parse::<VsockConfig>(),
            Err(ConfigError::BadValue { key: "cid", .. })
        ));
        assert_eq!(
            "cid=5".parse::<VsockConfig>(),
            Err(ConfigError::Missing("socket"))
        );
    }
}
