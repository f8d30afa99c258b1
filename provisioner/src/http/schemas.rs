//! The flow schemas as ClickHouse needs them: each `flow-vN.proto`, and `init.sh`,
//! the script an operator runs on each ClickHouse server (ClickHouse cannot fetch a
//! format schema by itself; it reads them from its format_schemas directory).

use flow_proto::SchemaVersion;

/// The directory `init.sh` writes to when given neither an argument nor the variable.
pub const DEFAULT_DIR: &str = "/var/lib/clickhouse/format_schemas";

/// The environment variable that overrides [`DEFAULT_DIR`].
pub const DIR_VARIABLE: &str = "CLICKHOUSE_FORMAT_SCHEMAS";

/// Why a schema cannot be carried by the script.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A shell cannot hold a NUL byte in a here-document or a variable.
    #[error("{file} contains a NUL byte, which a shell script cannot carry")]
    Nul {
        /// The schema's file name.
        file: String,
    },
}

/// The script that writes every version's `.proto` into the format_schemas
/// directory: each through a temporary file renamed into place, left alone when
/// already identical, and reported on stdout.
pub fn init_script(versions: &[SchemaVersion]) -> Result<String, SchemaError> {
    let files: Vec<(String, &str)> = versions
        .iter()
        .map(|v| (v.proto_file_name(), v.proto_text))
        .collect();
    script(&files)
}

/// The script for `(file name, text)` pairs; names are `flow-vN.proto`, so they need
/// no quoting, while the texts are carried byte for byte.
fn script(files: &[(String, &str)]) -> Result<String, SchemaError> {
    let mut out = format!(
        r#"#!/bin/sh
# Written by flow-provisioner {version}: puts the flow schemas into ClickHouse's
# format_schemas directory, where the Kafka tables' kafka_schema names them.
# Usage: sh init.sh [DIR]   (DIR defaults to ${var}, then {default})
# Safe to run again: a file already identical is left as it is.
set -eu
dir=${{1:-${{{var}:-{default}}}}}
mkdir -p "$dir"
tmp=
trap 'if [ -n "$tmp" ]; then rm -f "$tmp"; fi' EXIT
# install_schema NAME: renames the temporary file over NAME unless NAME already has those bytes.
install_schema() {{
    chmod 0644 "$tmp"
    if [ -f "$dir/$1" ] && cmp -s "$tmp" "$dir/$1"; then
        rm -f "$tmp"
        echo "unchanged $dir/$1"
    else
        mv -f "$tmp" "$dir/$1"
        echo "wrote $dir/$1"
    fi
    tmp=
}}
"#,
        version = env!("CARGO_PKG_VERSION"),
        var = DIR_VARIABLE,
        default = DEFAULT_DIR,
    );
    for (name, text) in files {
        if text.contains('\0') {
            return Err(SchemaError::Nul { file: name.clone() });
        }
        let delimiter = delimiter_absent_from(text);
        out.push_str(&format!("tmp=\"$dir/.{name}.$$\"\n"));
        // A quoted here-document is taken literally: no expansion, no escapes. It
        // always ends with a newline, so for a text without one the file is read
        // back through `$(…)`, which strips exactly that newline (the text itself
        // has none at its end), and written again without it.
        if text.is_empty() {
            out.push_str(": > \"$tmp\"\n");
        } else if text.ends_with('\n') {
            out.push_str(&format!(
                "cat > \"$tmp\" <<'{delimiter}'\n{text}{delimiter}\n"
            ));
        } else {
            out.push_str(&format!(
                "cat > \"$tmp\" <<'{delimiter}'\n{text}\n{delimiter}\n\
                 text=$(cat \"$tmp\")\nprintf '%s' \"$text\" > \"$tmp\"\n"
            ));
        }
        out.push_str(&format!("install_schema {name}\n"));
    }
    Ok(out)
}

/// A here-document delimiter that occurs nowhere in `text`, so no line of it can end
/// the document early.
fn delimiter_absent_from(text: &str) -> String {
    let mut delimiter = String::from("FLOW_SCHEMA_END");
    let mut n = 0u32;
    while text.contains(&delimiter) {
        n += 1;
        delimiter = format!("FLOW_SCHEMA_END_{n}");
    }
    delimiter
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::process::Command;

    /// Runs the script with the real `sh` into a fresh directory, with extra arguments.
    fn run(script: &str, dir: &std::path::Path) -> String {
        let output = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("init.sh")
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    #[test]
    fn any_text_arrives_byte_for_byte() {
        let nasty = [
            (
                "flow-v1.proto",
                "syntax = \"proto3\";\n$(touch pwned) `id` \\n \\\\ '\"\n",
            ),
            ("flow-v2.proto", "no newline at the end) EOF %s %%\r"),
            (
                "flow-v3.proto",
                "FLOW_SCHEMA_END\nFLOW_SCHEMA_END_1\n  FLOW_SCHEMA_END\n",
            ),
            ("flow-v4.proto", "\n\n\ttabs, ünïcödé, and blank lines\n\n"),
            ("flow-v5.proto", ""),
            ("flow-v6.proto", "two trailing newlines stay two\n\n"),
        ];
        let files: Vec<(String, &str)> = nasty.iter().map(|(n, t)| (n.to_string(), *t)).collect();
        let script = script(&files).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let first = run(&script, dir.path());
        for (name, text) in nasty {
            let written = std::fs::read(dir.path().join(name)).unwrap();
            assert_eq!(written, text.as_bytes(), "{name}");
            assert!(first.contains(&format!("wrote {}/{name}", dir.path().display())));
        }
        assert!(!dir.path().join("pwned").exists());
        assert!(!std::env::current_dir().unwrap().join("pwned").exists());
        let second = run(&script, dir.path());
        assert_eq!(second.matches("unchanged").count(), nasty.len(), "{second}");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names.len(),
            nasty.len(),
            "no temporary file is left: {names:?}"
        );
    }

    #[test]
    fn a_nul_byte_is_refused_with_the_file_named() {
        let err = script(&[("flow-v9.proto".into(), "a\0b")]).unwrap_err();
        assert!(err.to_string().contains("flow-v9.proto"), "{err}");
    }

    #[test]
    fn the_released_schemas_make_a_script() {
        let script = init_script(flow_proto::VERSIONS).unwrap();
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("set -eu\n"));
        for version in flow_proto::VERSIONS {
            assert!(script.contains(&format!("install_schema {}", version.proto_file_name())));
        }
    }
}
