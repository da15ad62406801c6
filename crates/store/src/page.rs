//! Offset pagination, bounded: list endpoints take `page` and `page_size` from clients, so both
//! are clamped here once (a page size of a million, or page 0, never reaches SQL).

/// A page asked for: 1-based `page`, `page_size` within `1..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub page_size: u32,
}

impl PageRequest {
    /// Page size when the client names none.
    pub const DEFAULT_SIZE: u32 = 20;
    /// Largest page size served.
    pub const MAX_SIZE: u32 = 100;
    /// Deepest offset served: past it a list is a scan, and the client should filter.
    pub const MAX_OFFSET: u64 = 100_000;

    /// The client's values, clamped: missing or 0 page is 1, missing size the default, a size
    /// over [`MAX_SIZE`](Self::MAX_SIZE) the maximum, and a page past
    /// [`MAX_OFFSET`](Self::MAX_OFFSET) the last page that offset allows.
    pub fn new(page: Option<u32>, page_size: Option<u32>) -> Self {
        let page_size = page_size.filter(|s| *s > 0).unwrap_or(Self::DEFAULT_SIZE).min(Self::MAX_SIZE);
        let deepest = u32::try_from(Self::MAX_OFFSET / u64::from(page_size) + 1).unwrap_or(u32::MAX);
        let page = page.filter(|p| *p > 0).unwrap_or(1).min(deepest);
        Self { page, page_size }
    }

    /// `OFFSET` of the page.
    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.page_size)
    }

    /// `LIMIT` of the page.
    pub fn limit(&self) -> i64 {
        i64::from(self.page_size)
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::new(None, None)
    }
}

/// One page of a list and the size of the whole list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub page: u32,
    pub page_size: u32,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, total: u64, request: PageRequest) -> Self {
        Self { items, total, page: request.page, page_size: request.page_size }
    }

    /// Pages in the whole list (0 for an empty list).
    pub fn total_pages(&self) -> u64 {
        self.total.div_ceil(u64::from(self.page_size.max(1)))
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { items: self.items.into_iter().map(f).collect(), total: self.total, page: self.page, page_size: self.page_size }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_clamped() {
        assert_eq!(PageRequest::new(None, None), PageRequest { page: 1, page_size: 20 });
        assert_eq!(PageRequest::new(Some(0), Some(0)), PageRequest { page: 1, page_size: 20 });
        assert_eq!(PageRequest::new(Some(3), Some(1_000_000)).page_size, 100);
        let deep = PageRequest::new(Some(u32::MAX), Some(10));
        assert!(deep.offset() as u64 <= PageRequest::MAX_OFFSET, "{deep:?}");
        let r = PageRequest::new(Some(3), Some(25));
        assert_eq!((r.offset(), r.limit()), (50, 25));
    }

    #[test]
    fn pages_count_and_map() {
        let p = Page::new(vec![1, 2], 41, PageRequest::new(Some(1), Some(20)));
        assert_eq!(p.total_pages(), 3);
        assert_eq!(p.map(|x| x * 10).items, vec![10, 20]);
        assert_eq!(Page::<u8>::new(vec![], 0, PageRequest::default()).total_pages(), 0);
    }
}
