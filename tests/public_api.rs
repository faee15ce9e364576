//! The public API as a snapshot, so that every new public item is a visible diff: the crate's
//! public paths with every feature on, read from rustdoc's JSON output, against
//! `tests/public_api.txt`. A change that means to grow (or shrink) the API updates the file:
//!
//! ```text
//! UPDATE_PUBLIC_API=1 cargo test --all-features --test public_api
//! ```
//!
//! One line per item, sorted: its path, then what it is. Listed are the modules, types, traits,
//! functions, constants and re-exports reachable from the crate root; the methods and associated
//! items of inherent impls; the public fields of structs; enum variants; trait items; and the
//! impls of traits other than std's (an impl of a trait of this crate's for a foreign type is
//! listed under the trait). Not listed: `#[doc(hidden)]` items, `__fuzz`, std traits' impls
//! (`Debug`, `Clone`, `From`...), auto traits and blanket impls. An item reachable by two paths
//! (a module's item re-exported at the root) is listed under both.
//!
//! The crate root is also held to [`MAX_ROOT_ITEMS`] public items.
//!
//! rustdoc's JSON is unstable: `scripts/rustdoc_unstable.sh` runs rustdoc with
//! `RUSTC_BOOTSTRAP=1`, for rustdoc alone, so that a stable toolchain produces it and no
//! dependency is rebuilt for it. The build shares the target directory and the dependencies'
//! metadata with `cargo doc`. The JSON is read generically, through the parts of the format that
//! have stayed put across its versions (`index`, `paths`, `external_crates`, each item's
//! `visibility`, `attrs` and `inner`).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Map, Value};

/// The crate, as rustdoc names it.
const CRATE: &str = "tower_connlimit";
/// The snapshot, from the package's root.
const SNAPSHOT: &str = "tests/public_api.txt";
/// The most public items the crate root may hold (modules, types, functions, re-exports).
const MAX_ROOT_ITEMS: usize = 30;
/// The crates whose traits' impls are not listed.
const STD_CRATES: [&str; 3] = ["std", "core", "alloc"];
/// Deeper than any public path of the crate: bounds the walk whatever the JSON holds.
const MAX_DEPTH: usize = 16;

const HEADER: &str = "\
# The public API of tower-connlimit with every feature on: one item per line, sorted, its path
# then what it is. Written by tests/public_api.rs; after a change to the API, update it with
#     UPDATE_PUBLIC_API=1 cargo test --all-features --test public_api
# and review the diff.
";

/// What the test reads from the JSON.
struct Api {
    /// The listing, one line per item.
    lines: BTreeSet<String>,
    /// The crate root's public items: their names and what they are.
    root: Vec<String>,
}

/// The API, built once for both tests.
fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        let json = rustdoc_json();
        let text = std::fs::read_to_string(&json)
            .unwrap_or_else(|err| panic!("cannot read rustdoc's JSON {}: {err}", json.display()));
        let doc: Value = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("rustdoc's JSON {} is not JSON: {err}", json.display()));
        Api::read(&doc)
    })
}

/// Builds the crate's rustdoc JSON, all features on, and returns its path.
fn rustdoc_json() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let metadata = run(Command::new(&cargo).current_dir(manifest_dir).args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
    ]));
    let metadata: Value = serde_json::from_slice(&metadata).expect("cargo metadata's JSON");
    let target = metadata["target_directory"]
        .as_str()
        .expect("cargo metadata names the target directory");
    run(Command::new(&cargo)
        .current_dir(manifest_dir)
        .env("RUSTDOC", manifest_dir.join("scripts/rustdoc_unstable.sh"))
        // The doc step's flags (`-D warnings`) are not this test's business.
        .env_remove("RUSTDOCFLAGS")
        .args(["rustdoc", "--lib", "--all-features", "--quiet", "--"])
        .args(["-Z", "unstable-options", "--output-format", "json"]));
    let json = Path::new(target).join("doc").join(format!("{CRATE}.json"));
    assert!(
        json.is_file(),
        "cargo rustdoc succeeded but wrote no {}: run `cargo clean --doc` and the test again",
        json.display()
    );
    json
}

/// Runs `command` and returns its output, or fails with what it printed.
fn run(command: &mut Command) -> Vec<u8> {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "rustdoc's JSON could not be produced: {command:?} failed ({})\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

impl Api {
    fn read(doc: &Value) -> Api {
        let object = |key: &str| {
            doc[key]
                .as_object()
                .unwrap_or_else(|| panic!("rustdoc's JSON has no `{key}` object: a new format?"))
        };
        let mut walk = Walk {
            index: object("index"),
            paths: object("paths"),
            external: object("external_crates"),
            lines: BTreeSet::new(),
            public: HashMap::new(),
            trait_impls: Vec::new(),
            traits: Vec::new(),
        };
        let root = key(&doc["root"]).expect("rustdoc's JSON names its root");
        let root_item = walk.item(&root).expect("the root module is in the index");
        let mut root_items = Vec::new();
        for child in walk.module_items(root_item) {
            for (name, kind, _) in walk.exported(child, 0) {
                if name != "__fuzz" {
                    root_items.push(format!("{name} ({kind})"));
                }
            }
        }
        walk.module(root_item, CRATE, 0, &mut Vec::new());
        walk.finish();
        root_items.sort();
        Api {
            lines: walk.lines,
            root: root_items,
        }
    }
}

/// An id, as the index's keys spell it (a number in recent formats, a string in older ones).
fn key(id: &Value) -> Option<String> {
    match id {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// The item's kind: the one key of its `inner`.
fn kind(item: &Value) -> &str {
    item["inner"]
        .as_object()
        .and_then(|inner| inner.keys().next())
        .map_or("?", String::as_str)
}

/// What a line calls an item of `kind`.
fn label(kind: &str) -> &str {
    match kind {
        "module" => "mod",
        "function" => "fn",
        "type_alias" | "assoc_type" => "type",
        "constant" | "assoc_const" => "const",
        "struct_field" => "field",
        "proc_macro" => "macro",
        other => other,
    }
}

fn is_hidden(item: &Value) -> bool {
    item["attrs"].as_array().is_some_and(|attrs| {
        attrs.iter().any(|attr| {
            let text = attr.to_string().replace(' ', "");
            text.contains("doc(hidden)") || text == "\"hidden\""
        })
    })
}

fn is_public(item: &Value) -> bool {
    item["visibility"] == "public"
}

struct Walk<'a> {
    index: &'a Map<String, Value>,
    paths: &'a Map<String, Value>,
    external: &'a Map<String, Value>,
    lines: BTreeSet<String>,
    /// The public paths of the crate's items, for the traits named in impls.
    public: HashMap<String, BTreeSet<String>>,
    /// (type path, trait id, the trait's path as the impl writes it) for each trait impl.
    trait_impls: Vec<(String, String, String)>,
    /// (trait path, trait item) for each public trait of the crate's.
    traits: Vec<(String, &'a Value)>,
}

impl<'a> Walk<'a> {
    fn item(&self, id: &str) -> Option<&'a Value> {
        self.index.get(id)
    }

    fn item_of(&self, id: &Value) -> Option<&'a Value> {
        key(id).and_then(|id| self.item(&id))
    }

    fn inner(&self, item: &'a Value) -> &'a Value {
        &item["inner"][kind(item)]
    }

    /// The items whose ids `value` lists.
    fn items(&self, value: &'a Value) -> impl Iterator<Item = &'a Value> + '_ {
        value
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|id| self.item_of(id))
    }

    fn module_items(&self, module: &'a Value) -> Vec<&'a Value> {
        self.items(&self.inner(module)["items"]).collect()
    }

    /// What a module's child exports: (name, kind, the item, unless foreign) for each name it
    /// makes public; several for a glob re-export (`globs` deep in globs already).
    fn exported(&self, child: &'a Value, globs: usize) -> Vec<(String, String, Option<&'a Value>)> {
        if !is_public(child) || is_hidden(child) || kind(child) == "impl" || globs > MAX_DEPTH {
            return Vec::new();
        }
        if kind(child) != "use" {
            let name = child["name"].as_str().unwrap_or("?").to_owned();
            return vec![(name, label(kind(child)).to_owned(), Some(child))];
        }
        let used = self.inner(child);
        let target = self.item_of(&used["id"]);
        if used["is_glob"] == true {
            return match target {
                Some(module) if kind(module) == "module" => self
                    .module_items(module)
                    .into_iter()
                    .flat_map(|item| self.exported(item, globs + 1))
                    .collect(),
                _ => vec![(
                    "*".to_owned(),
                    format!("use {}::*", used["source"].as_str().unwrap_or("?")),
                    None,
                )],
            };
        }
        let name = used["name"].as_str().unwrap_or("?").to_owned();
        match target {
            Some(item) if !is_hidden(item) => {
                vec![(name, label(kind(item)).to_owned(), Some(item))]
            }
            Some(_) => Vec::new(),
            None => vec![(
                name,
                format!("use {}", used["source"].as_str().unwrap_or("?")),
                None,
            )],
        }
    }

    /// Lists the public items of `module`, at `path`.
    fn module(&mut self, module: &'a Value, path: &str, depth: usize, seen: &mut Vec<String>) {
        let id = key(&module["id"]).unwrap_or_default();
        if depth > MAX_DEPTH || seen.contains(&id) {
            return;
        }
        seen.push(id);
        for child in self.module_items(module) {
            for (name, what, item) in self.exported(child, 0) {
                if name == "__fuzz" {
                    continue;
                }
                let child_path = format!("{path}::{name}");
                match item {
                    Some(item) => self.item_at(item, &child_path, depth + 1, seen),
                    None => {
                        self.lines.insert(format!("{child_path} {what}"));
                    }
                }
            }
        }
        seen.pop();
    }

    /// Lists `item`, at `path`, and its members.
    fn item_at(&mut self, item: &'a Value, path: &str, depth: usize, seen: &mut Vec<String>) {
        let kind = kind(item);
        self.lines.insert(format!("{path} {}", label(kind)));
        if let Some(id) = key(&item["id"]) {
            self.public.entry(id).or_default().insert(path.to_owned());
        }
        let inner = self.inner(item);
        match kind {
            "module" => self.module(item, path, depth, seen),
            "struct" | "union" => {
                let fields = match &inner["kind"] {
                    Value::Object(shape) if shape.contains_key("plain") => {
                        &shape["plain"]["fields"]
                    }
                    Value::Object(shape) if shape.contains_key("tuple") => &shape["tuple"],
                    _ => &inner["fields"],
                };
                self.fields(fields, path);
                self.impls(&inner["impls"], path);
            }
            "enum" => {
                for variant in self.items(&inner["variants"]).collect::<Vec<_>>() {
                    if is_hidden(variant) {
                        continue;
                    }
                    let variant_path =
                        format!("{path}::{}", variant["name"].as_str().unwrap_or("?"));
                    self.lines.insert(format!("{variant_path} variant"));
                    if let Value::Object(shape) = &self.inner(variant)["kind"] {
                        if let Some(fields) = shape.get("struct") {
                            self.fields(&fields["fields"], &variant_path);
                        }
                    }
                }
                self.impls(&inner["impls"], path);
            }
            "trait" => {
                for member in self.items(&inner["items"]).collect::<Vec<_>>() {
                    if !is_hidden(member) {
                        self.member(member, path);
                    }
                }
                self.traits.push((path.to_owned(), item));
            }
            _ => {}
        }
    }

    /// Lists the public fields among `fields` (named, or numbered in a tuple struct).
    fn fields(&mut self, fields: &'a Value, path: &str) {
        for (n, field) in fields.as_array().into_iter().flatten().enumerate() {
            let Some(field) = self.item_of(field) else {
                continue; // a field rustdoc stripped: not public
            };
            if is_public(field) && !is_hidden(field) {
                let name = field["name"]
                    .as_str()
                    .map_or_else(|| n.to_string(), str::to_owned);
                self.lines.insert(format!("{path}::{name} field"));
            }
        }
    }

    fn member(&mut self, member: &'a Value, path: &str) {
        let name = member["name"].as_str().unwrap_or("?");
        self.lines
            .insert(format!("{path}::{name} {}", label(kind(member))));
    }

    /// Lists the inherent impls' public items and notes the trait impls, of the type at `path`.
    fn impls(&mut self, impls: &'a Value, path: &str) {
        for imp in self.items(impls).collect::<Vec<_>>() {
            let inner = self.inner(imp);
            if is_hidden(imp) || inner["is_synthetic"] == true || !inner["blanket_impl"].is_null() {
                continue;
            }
            match key(&inner["trait"]["id"]) {
                None => {
                    for member in self.items(&inner["items"]).collect::<Vec<_>>() {
                        if is_public(member) && !is_hidden(member) {
                            self.member(member, path);
                        }
                    }
                }
                Some(trait_id) => {
                    let written = inner["trait"]["path"].as_str().unwrap_or("?").to_owned();
                    self.trait_impls.push((path.to_owned(), trait_id, written));
                }
            }
        }
    }

    /// The crate a path in `paths` belongs to, and the path.
    fn path_of(&self, id: &str) -> Option<(String, Vec<&'a str>)> {
        let entry = self.paths.get(id)?;
        let krate = key(&entry["crate_id"])?;
        let krate = if krate == "0" {
            CRATE.to_owned()
        } else {
            self.external.get(&krate)?["name"].as_str()?.to_owned()
        };
        let path = entry["path"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        Some((krate, path))
    }

    /// How a line names the item `id`: its public path for the crate's own (none if it has
    /// none), its crate and name for a foreign one (not its defining module's path, which
    /// changes with the dependency's layout).
    fn name_of(&self, id: &str) -> Option<String> {
        if let Some(paths) = self.public.get(id) {
            return paths.iter().min_by_key(|path| (path.len(), *path)).cloned();
        }
        let (krate, path) = self.path_of(id)?;
        if krate == CRATE {
            return None;
        }
        Some(format!("{krate}::{}", path.last()?))
    }

    /// A type, as an impl's `for` names it: enough to tell impls apart.
    fn type_name(&self, ty: &Value) -> String {
        let Some((shape, inner)) = ty.as_object().and_then(|ty| ty.iter().next()) else {
            return "_".to_owned();
        };
        match shape.as_str() {
            "resolved_path" => key(&inner["id"])
                .and_then(|id| self.name_of(&id))
                .unwrap_or_else(|| inner["path"].as_str().unwrap_or("_").to_owned()),
            "generic" | "primitive" => inner.as_str().unwrap_or("_").to_owned(),
            "borrowed_ref" => format!("&{}", self.type_name(&inner["type"])),
            "slice" => format!("[{}]", self.type_name(inner)),
            _ => shape.clone(),
        }
    }

    /// Writes the trait impls noted on the way, now that every public path is known.
    fn finish(&mut self) {
        for (path, trait_id, written) in std::mem::take(&mut self.trait_impls) {
            let name = match self.path_of(&trait_id) {
                Some((krate, _)) if STD_CRATES.contains(&krate.as_str()) => continue,
                // None for a trait of the crate's that is not public (a sealed helper): no API.
                Some(_) => match self.name_of(&trait_id) {
                    Some(name) => name,
                    None => continue,
                },
                None => written,
            };
            self.lines.insert(format!("{path} impl {name}"));
        }
        // The crate's public traits' impls for foreign types (its own types list theirs).
        for (path, item) in std::mem::take(&mut self.traits) {
            let implementations = &self.inner(item)["implementations"];
            for imp in self.items(implementations).collect::<Vec<_>>() {
                let inner = self.inner(imp);
                if is_hidden(imp) || inner["is_synthetic"] == true {
                    continue;
                }
                let ty = &inner["for"];
                let local = key(&ty["resolved_path"]["id"])
                    .and_then(|id| self.path_of(&id))
                    .is_some_and(|(krate, _)| krate == CRATE);
                if !local {
                    self.lines
                        .insert(format!("{path} impl for {}", self.type_name(ty)));
                }
            }
        }
    }
}

#[test]
fn the_public_api_is_the_snapshot() {
    let api = api();
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR")).join(SNAPSHOT);
    let mut expected = HEADER.to_owned();
    for line in &api.lines {
        expected.push_str(line);
        expected.push('\n');
    }
    if std::env::var_os("UPDATE_PUBLIC_API").is_some_and(|v| v == "1") {
        std::fs::write(&snapshot, expected).expect("write the snapshot");
        return;
    }
    let text = std::fs::read_to_string(&snapshot).unwrap_or_default();
    if text == expected {
        return;
    }
    let recorded: BTreeSet<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .collect();
    let now: BTreeSet<&str> = api.lines.iter().map(String::as_str).collect();
    let added: Vec<_> = now.difference(&recorded).collect();
    let removed: Vec<_> = recorded.difference(&now).collect();
    let mut diff = String::new();
    for line in &added {
        diff.push_str(&format!("+ {line}\n"));
    }
    for line in &removed {
        diff.push_str(&format!("- {line}\n"));
    }
    panic!(
        "the public API differs from {SNAPSHOT} ({} added, {} gone{}):\n{diff}\
         If the change is meant, update the snapshot and review its diff:\n    \
         UPDATE_PUBLIC_API=1 cargo test --all-features --test public_api",
        added.len(),
        removed.len(),
        if diff.is_empty() {
            "; its header or order is not the one written"
        } else {
            ""
        },
    );
}

#[test]
fn the_crate_root_stays_small() {
    let root = &api().root;
    assert!(
        root.len() <= MAX_ROOT_ITEMS,
        "the crate root has {} public items, more than {MAX_ROOT_ITEMS}: put the new ones in a \
         module\n{}",
        root.len(),
        root.join("\n")
    );
}
