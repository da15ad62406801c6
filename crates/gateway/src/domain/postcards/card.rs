//! The postcard's `frontend_code`: one self-contained HTML document (inline CSS, no script,
//! nothing loaded but the picture) that a client can show as it is. Every string in it that
//! a user or a provider chose (the message, mood, style, theme, the picture's URL) goes
//! through [`escape`], so none of it can become markup, and a Content-Security-Policy meta
//! tag forbids scripts and every load but the picture's origin, should anything slip by.

use std::fmt::Write as _;

/// `s` safe as HTML text and as a double- or single-quoted attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The card's colours.
struct Palette {
    paper: &'static str,
    ink: &'static str,
    accent: &'static str,
}

const PALETTES: [Palette; 5] = [
    Palette { paper: "#fffaf0", ink: "#3b2f2f", accent: "#d9822b" },
    Palette { paper: "#f3f8ff", ink: "#1f2d3d", accent: "#3a7bd5" },
    Palette { paper: "#f6fff4", ink: "#22331f", accent: "#4c9a2a" },
    Palette { paper: "#fff4f8", ink: "#3d1f2b", accent: "#c2185b" },
    Palette { paper: "#14121f", ink: "#e9e6ff", accent: "#00e5ff" },
];

/// The same mood and style always get the same colours (FNV-1a: stable across builds).
fn palette(mood: &str, style: &str) -> &'static Palette {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in mood.bytes().chain([0]).chain(style.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    &PALETTES[(h % PALETTES.len() as u64) as usize]
}

/// What goes on the card.
pub struct Card<'a> {
    pub text: &'a str,
    pub mood: &'a str,
    pub style: &'a str,
    pub theme: &'a str,
    /// Our URL of the picture: absolute (with the public URL) or a path on our origin.
    pub image_url: &'a str,
}

/// The `img-src` of the policy, ready for the attribute: the picture's origin (escaped), or
/// `'self'` for a path.
fn image_source(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => escape(&u.origin().ascii_serialization()),
        _ => "'self'".to_owned(),
    }
}

/// The card as an HTML document.
pub fn render(card: &Card<'_>) -> String {
    let p = palette(card.mood, card.style);
    let mut html = String::with_capacity(2048 + card.text.len() * 2);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src {src}; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n<style>\n\
         body{{margin:0;padding:16px;background:#eceae4;font-family:\"PingFang SC\",\"Noto Serif SC\",\"Songti SC\",serif}}\n\
         .postcard{{max-width:640px;margin:0 auto;background:{paper};color:{ink};border-radius:12px;box-shadow:0 6px 24px rgba(0,0,0,.18);overflow:hidden}}\n\
         .postcard img{{display:block;width:100%;height:auto;object-fit:cover}}\n\
         .message{{padding:20px 24px 18px;border-top:4px solid {accent}}}\n\
         .message p{{margin:0 0 14px;font-size:18px;line-height:1.75;white-space:pre-wrap;overflow-wrap:anywhere}}\n\
         .tags{{font-size:13px;color:{accent};letter-spacing:.05em}}\n\
         </style>\n</head>\n<body>\n<article class=\"postcard\">\n<img src=\"{url}\" alt=\"{title}\">\n\
         <section class=\"message\">\n<p>{text}</p>\n<div class=\"tags\">{mood} · {style} · {title}</div>\n</section>\n</article>\n</body>\n</html>\n",
        src = image_source(card.image_url),
        title = escape(card.theme),
        paper = p.paper,
        ink = p.ink,
        accent = p.accent,
        url = escape(card.image_url),
        text = escape(card.text),
        mood = escape(card.mood),
        style = escape(card.style),
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(escape("<script>alert(1)</script>"), "&lt;script&gt;alert(1)&lt;/script&gt;");
        assert_eq!(escape(r#"a "b" 'c' & d"#), "a &quot;b&quot; &#39;c&#39; &amp; d");
        assert_eq!(escape("&amp;"), "&amp;amp;", "already escaped text is escaped again, shown as written");
        assert_eq!(escape("生日快乐\n"), "生日快乐\n");
        assert_eq!(escape(""), "");
    }

    fn card<'a>(text: &'a str, theme: &'a str, url: &'a str) -> Card<'a> {
        Card { text, mood: "开心", style: "赛博朋克", theme, image_url: url }
    }

    #[test]
    fn a_card_holds_only_escaped_strings() {
        let html = render(&card(
            "<script>alert(1)</script>\"onload='x'",
            "\"><img src=x onerror=alert(2)>",
            "https://cards.example.com/api/v1/postcards/media/k?a=1&b=\"2\"",
        ));
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;onload=&#39;x&#39;"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"));
        assert!(html.contains("src=\"https://cards.example.com/api/v1/postcards/media/k?a=1&amp;b=&quot;2&quot;\""), "{html}");
        assert_eq!(html.matches("<img ").count(), 1, "only the picture");
        assert!(html.contains("img-src https://cards.example.com;"), "{html}");
        assert!(html.contains("default-src 'none'"));
        for external in ["<link", "@import", "url(", "<iframe", "<object", "<embed", "<base", "<form"] {
            assert!(!html.contains(external), "{external} in {html}");
        }
    }

    #[test]
    fn a_path_is_served_by_our_origin_and_colours_are_stable() {
        let html = render(&card("你好", "生日", "/api/v1/postcards/media/abc"));
        assert!(html.contains("img-src 'self';"), "{html}");
        assert!(html.contains("<img src=\"/api/v1/postcards/media/abc\" alt=\"生日\">"), "{html}");
        assert_eq!(html, render(&card("你好", "生日", "/api/v1/postcards/media/abc")));
        assert!(std::ptr::eq(palette("开心", "赛博朋克"), palette("开心", "赛博朋克")));
    }
}
