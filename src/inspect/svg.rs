//! Drawing a [`Picture`] as SVG, and the self-contained HTML page around
//! it.
//!
//! Owns: the XML writer (every name and path escaped), the layout (a fixed
//! width; long segments wrap onto more lines, never widen the picture), the
//! legend and the colours. Must never: compute a figure; everything drawn
//! or written comes from the [`Picture`], which comes from a report. No
//! script, no external resource: the files open offline in any browser.

use std::fmt::Write as _;

use super::picture::Picture;
use super::proc::PageClass;
use super::svg_row;

/// The picture's width in pixels, whatever the library's size.
pub const WIDTH: u32 = 1200;
pub(super) const MARGIN: u32 = 16;
/// Room left of the cells for the strip labels.
const LABEL_W: u32 = 150;
pub(super) const X0: u32 = MARGIN + LABEL_W;
/// Width of the cell area.
pub(super) const LINE_W: u32 = WIDTH - X0 - MARGIN;
pub(super) const TEXT_STEP: u32 = 16;

/// Fill of each page state; also what the PNG test looks for.
pub fn colour(class: PageClass) -> &'static str {
    match class {
        PageClass::Absent => "#e4e4e4",
        PageClass::Zero => "#b3c3cc",
        PageClass::Shared => "#2c7bb6",
        PageClass::PrivateClean => "#1a9641",
        PageClass::PrivateDirty => "#d7191c",
    }
}

/// Escape text or an attribute value for XML. Characters XML 1.0 cannot
/// hold at all (most control characters, which a file name may contain)
/// become U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A minimal XML writer: elements open and close in order, every attribute
/// and text escaped. One element per line keeps the output diffable.
#[derive(Default)]
pub struct Xml {
    out: String,
    open: Vec<&'static str>,
}

impl Xml {
    fn start(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        for _ in 0..self.open.len() {
            self.out.push(' ');
        }
        let _ = write!(self.out, "<{tag}");
        for (k, v) in attrs {
            let _ = write!(self.out, " {k}=\"{}\"", escape(v));
        }
    }

    pub fn open(&mut self, tag: &'static str, attrs: &[(&str, &str)]) {
        self.start(tag, attrs);
        self.out.push_str(">\n");
        self.open.push(tag);
    }

    pub fn empty(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        self.start(tag, attrs);
        self.out.push_str("/>\n");
    }

    /// An element holding only text.
    pub fn leaf(&mut self, tag: &str, attrs: &[(&str, &str)], text: &str) {
        self.start(tag, attrs);
        let _ = writeln!(self.out, ">{}</{tag}>", escape(text));
    }

    /// Already-written XML (a part drawn before its container's size was
    /// known).
    fn raw(&mut self, xml: &str) {
        self.out.push_str(xml);
    }

    pub fn close(&mut self) {
        if let Some(tag) = self.open.pop() {
            for _ in 0..self.open.len() {
                self.out.push(' ');
            }
            let _ = writeln!(self.out, "</{tag}>");
        }
    }

    pub fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.close();
        }
        self.out
    }
}

fn style() -> String {
    let mut css = String::from(
        "text{font-family:'DejaVu Sans Mono',monospace;font-size:12px;fill:#222}\
         .title{font-size:18px;font-weight:bold}.obj{font-size:14px;font-weight:bold}\
         .dim{fill:#666}.strip{font-size:11px;fill:#555}.role{font-weight:bold}.mark{pointer-events:none}",
    );
    for c in PageClass::ALL {
        let _ = write!(css, ".{}{{fill:{}}}", c.css(), colour(c));
    }
    css
}

/// Where the drawing has got to.
pub(super) struct Canvas {
    pub(super) xml: Xml,
    pub(super) y: u32,
}

impl Canvas {
    fn text(&mut self, class: &str, x: u32, s: &str) {
        self.text_at(class, x, self.y, s);
    }

    pub(super) fn text_at(&mut self, class: &str, x: u32, y: u32, s: &str) {
        let (x, y) = (x.to_string(), y.to_string());
        let mut attrs = vec![("x", x.as_str()), ("y", y.as_str())];
        if !class.is_empty() {
            attrs.insert(0, ("class", class));
        }
        self.xml.leaf("text", &attrs, s);
    }

    /// One line of text, then move down.
    fn line(&mut self, class: &str, s: &str) {
        self.y += TEXT_STEP;
        self.text(class, MARGIN, s);
    }
}

/// The picture as a standalone SVG document.
pub fn svg(p: &Picture) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}",
        svg_element(p)
    )
}

/// The `<svg>` element alone, for embedding in HTML.
pub fn svg_element(p: &Picture) -> String {
    let mut c = Canvas {
        xml: Xml::default(),
        y: MARGIN,
    };
    c.y += 6;
    c.text("title", MARGIN, &p.title);
    for l in &p.lines {
        c.line("dim", l);
    }
    legend(&mut c, p);
    for o in &p.objects {
        c.y += 14;
        let name = o.name.as_str();
        let mut attrs = vec![
            ("class", "object".to_string()),
            ("data-name", o.name.clone()),
        ];
        if let Some(t) = &o.totals {
            attrs.push(("data-pages", t.pages.to_string()));
            attrs.push(("data-resident", list(&t.resident)));
            attrs.push(("data-zero", list(&t.zero)));
        }
        let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        c.xml.open("g", &attrs);
        c.line("obj", name);
        if !o.detail.is_empty() {
            c.line("dim", &o.detail);
        }
        svg_row::object_row(&mut c, p, o);
        c.xml.close();
    }
    totals(&mut c, p);
    let height = c.y + MARGIN;
    let body = c.xml.finish();
    let mut x = Xml::default();
    let (w, h) = (WIDTH.to_string(), height.to_string());
    x.open(
        "svg",
        &[
            ("xmlns", "http://www.w3.org/2000/svg"),
            ("width", &w),
            ("height", &h),
            ("viewBox", &format!("0 0 {w} {h}")),
        ],
    );
    x.leaf("title", &[], &p.title);
    x.leaf("style", &[], &style());
    x.empty(
        "rect",
        &[("width", &w), ("height", &h), ("fill", "#ffffff")],
    );
    x.raw(&body);
    x.finish()
}

fn list(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn legend(c: &mut Canvas, p: &Picture) {
    c.y += 12;
    c.xml.open("g", &[("class", "legend")]);
    let mut x = MARGIN;
    let top = c.y;
    for class in PageClass::ALL {
        c.xml.empty(
            "rect",
            &[
                ("class", &format!("swatch {}", class.css())),
                ("x", &x.to_string()),
                ("y", &top.to_string()),
                ("width", "16"),
                ("height", "16"),
            ],
        );
        let label = class.label();
        c.y = top + 13;
        c.text("", x + 22, label);
        x += 22 + 8 * label.len() as u32 + 24;
    }
    c.y = top + 16;
    c.line(
        "dim",
        "shared: the frame has two page-table mappings or more (kpagecount, or pagemap's exclusive bit);",
    );
    c.line(
        "dim",
        "private clean: a page-cache page only this process maps; private dirty: a copy-on-write copy or anonymous memory",
    );
    if p.frames {
        c.line(
            "dim",
            "the coloured bar under a resident cell marks its physical frames: one colour in several strips is one physical copy",
        );
    } else {
        c.line(
            "dim",
            "physical frames are hidden without CAP_SYS_ADMIN: no frame marks, and no counts of sharers",
        );
    }
    c.line(
        "dim",
        &format!(
            "segments over {} pages draw runs of pages: a cell is a run in one state, its width grows with log2 of its length; hover for counts",
            super::picture::PAGES_DRAWN_ONE_BY_ONE
        ),
    );
    c.xml.close();
}

fn totals(c: &mut Canvas, p: &Picture) {
    c.y += 12;
    let t = &p.totals;
    let physical = t.physical.map_or(String::new(), |v| v.to_string());
    c.xml.open(
        "g",
        &[
            ("class", "totals"),
            ("data-pages", &t.pages.to_string()),
            ("data-resident", &list(&t.resident)),
            ("data-zero", &list(&t.zero)),
            ("data-physical", &physical),
        ],
    );
    c.line("obj", "totals");
    for l in &p.total_lines {
        c.line("", l);
    }
    c.xml.close();
    for n in &p.notes {
        c.line("dim", &format!("note: {n}"));
    }
}

/// A self-contained page: the picture, then the text report as a table.
pub fn html(p: &Picture, report: &str) -> String {
    let title = escape(&p.title);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
         <style>body{{font-family:sans-serif;margin:16px;background:#fff;color:#222}}\
         pre{{font-size:12px;background:#f6f6f6;padding:8px;overflow-x:auto}}</style>\n</head>\n<body>\n\
         {}<h2>The numbers</h2>\n<pre>{}</pre>\n</body>\n</html>\n",
        svg_element(p),
        escape(report)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_drops_what_xml_cannot_hold() {
        assert_eq!(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(escape("x\u{1}y"), "x\u{fffd}y");
    }

    #[test]
    fn writer_nests_and_closes() {
        let mut x = Xml::default();
        x.open("g", &[("data-name", "<lib>")]);
        x.leaf("text", &[], "a&b");
        assert_eq!(
            x.finish(),
            "<g data-name=\"&lt;lib&gt;\">\n <text>a&amp;b</text>\n</g>\n"
        );
    }
}
