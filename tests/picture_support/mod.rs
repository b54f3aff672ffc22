//! Reading the pictures back for tests/pictures.rs: the SVG parsed as XML
//! (roxmltree) into segments and cells, with the structural checks every
//! picture passes; and headless Chromium rendering the HTML page into a
//! PNG, decoded with the png crate.

pub mod chromium;

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, Clone)]
pub struct DrawnCell {
    pub strip: usize,
    pub first: u64,
    pub pages: u64,
    pub class: String,
    pub mark: Option<String>,
    pub title: String,
}

#[derive(Debug, Default)]
pub struct DrawnSegment {
    pub role: String,
    pub pages: u64,
    pub cells: Vec<DrawnCell>,
}

impl DrawnSegment {
    /// Pages of `class` in strip `s`.
    pub fn count(&self, s: usize, class: &str) -> u64 {
        self.cells
            .iter()
            .filter(|c| c.strip == s && c.class == class)
            .map(|c| c.pages)
            .sum()
    }
    pub fn resident(&self, s: usize) -> u64 {
        ["shared", "clean", "dirty"]
            .iter()
            .map(|c| self.count(s, c))
            .sum()
    }
    /// The cells of strip `s` at the cell starting at page `first`.
    pub fn at(&self, s: usize, first: u64) -> Option<&DrawnCell> {
        self.cells.iter().find(|c| c.strip == s && c.first == first)
    }
}

pub struct Drawn {
    pub strips: usize,
    /// By (object, vaddr start, vaddr end).
    pub segments: BTreeMap<(String, u64, u64), DrawnSegment>,
    /// `data-*` of `<g class="totals">` and of each `<g class="object">`.
    pub totals: BTreeMap<String, String>,
    pub objects: BTreeMap<String, BTreeMap<String, String>>,
}

pub fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex number")
}

pub fn attrs(n: roxmltree::Node) -> BTreeMap<String, String> {
    n.attributes()
        .map(|a| (a.name().to_string(), a.value().to_string()))
        .collect()
}

pub fn has_class(n: roxmltree::Node, class: &str) -> bool {
    n.attribute("class")
        .is_some_and(|c| c.split(' ').any(|x| x == class))
}

/// Parse the SVG (it must be well-formed XML) and check its structure:
/// a fixed width, and every page of every segment drawn exactly once per
/// strip, each cell's title giving its page count and state.
pub fn parse(svg: &str) -> Drawn {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("SVG is not XML: {e}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(root.attribute("width"), Some("1200"), "fixed width");
    let mut drawn = Drawn {
        strips: 0,
        segments: BTreeMap::new(),
        totals: BTreeMap::new(),
        objects: BTreeMap::new(),
    };
    for n in root.descendants().filter(|n| n.is_element()) {
        if has_class(n, "totals") {
            drawn.totals = attrs(n);
        }
        if has_class(n, "object") {
            let a = attrs(n);
            drawn.objects.insert(a["data-name"].clone(), a);
        }
        if !has_class(n, "segment") {
            continue;
        }
        let (vs, ve) = n.attribute("data-vaddr").unwrap().split_once('-').unwrap();
        let mut seg = DrawnSegment {
            role: n.attribute("data-role").unwrap().to_string(),
            pages: n.attribute("data-pages").unwrap().parse().unwrap(),
            cells: Vec::new(),
        };
        for c in n.children().filter(|c| c.has_attribute("data-strip")) {
            let title = c
                .children()
                .find(|t| t.has_tag_name("title"))
                .and_then(|t| t.text())
                .unwrap_or_else(|| panic!("a cell without a title in {}", seg.role))
                .to_string();
            seg.cells.push(DrawnCell {
                strip: c.attribute("data-strip").unwrap().parse().unwrap(),
                first: c.attribute("data-first").unwrap().parse().unwrap(),
                pages: c.attribute("data-pages").unwrap().parse().unwrap(),
                class: c.attribute("class").unwrap().to_string(),
                mark: c.attribute("data-mark").map(str::to_string),
                title,
            });
        }
        let object = n.attribute("data-object").unwrap().to_string();
        drawn.segments.insert((object, hex(vs), hex(ve)), seg);
    }
    drawn.strips = drawn
        .segments
        .values()
        .flat_map(|s| s.cells.iter().map(|c| c.strip + 1))
        .max()
        .unwrap_or(0);
    for ((object, vs, _), seg) in &drawn.segments {
        check_cells(object, *vs, seg, drawn.strips);
    }
    drawn
}

pub fn check_cells(object: &str, vaddr: u64, seg: &DrawnSegment, strips: usize) {
    let label = |class: &str| match class {
        "none" => "not resident",
        "zero" => "zero page",
        "shared" => "resident, shared",
        "clean" => "resident, private clean",
        "dirty" => "private dirty",
        other => panic!("{object} {}: unknown cell class {other}", seg.role),
    };
    for s in 0..strips {
        let mut next = 0;
        for c in seg.cells.iter().filter(|c| c.strip == s) {
            assert_eq!(
                c.first, next,
                "{object} {vaddr:#x} strip {s}: cells skip or overlap"
            );
            next += c.pages;
            let count = if c.pages == 1 {
                "(1 page,".to_string()
            } else {
                format!("({} pages,", c.pages)
            };
            assert!(
                c.title.contains(&count),
                "title without its count: {}",
                c.title
            );
            assert!(
                c.title.contains(&format!(": {}", label(&c.class))),
                "title does not name the cell's state {}: {}",
                c.class,
                c.title
            );
        }
        assert_eq!(
            next, seg.pages,
            "{object} {vaddr:#x} strip {s}: pages drawn"
        );
    }
}

pub fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

pub fn list(s: &str) -> Vec<u64> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().unwrap())
        .collect()
}
