//! `wsgi.input`: the request body as a file-like object (PEP 3333 "Input and Error
//! Streams"). The body is already complete when the app is called; reads never go
//! past its end.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

#[pyclass(module = "ferricorn", name = "Input")]
pub struct Input {
    body: Py<PyBytes>,
    pos: usize,
}

impl Input {
    pub fn new(body: Py<PyBytes>) -> Input {
        Input { body, pos: 0 }
    }

    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        let body = self.body.bind(py);
        let data = body.as_bytes();
        let start = self.pos.min(data.len());
        let end = start.saturating_add(n).min(data.len());
        self.pos = end;
        if start == 0 && end == data.len() {
            return body.clone(); // whole body: no copy
        }
        PyBytes::new(py, &data[start..end])
    }

    fn remaining(&self, py: Python<'_>) -> usize {
        self.body.bind(py).as_bytes().len().saturating_sub(self.pos)
    }

    fn line_len(&self, py: Python<'_>, limit: usize) -> usize {
        let data = self.body.bind(py).as_bytes();
        let rest = &data[self.pos.min(data.len())..];
        let rest = &rest[..rest.len().min(limit)];
        rest.iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1)
    }
}

/// `None` or a negative size means "all".
fn size_limit(size: Option<isize>) -> usize {
    match size {
        Some(n) if n >= 0 => n as usize,
        _ => usize::MAX,
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> Bound<'py, PyBytes> {
        let n = size_limit(size).min(self.remaining(py));
        self.take(py, n)
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> Bound<'py, PyBytes> {
        let n = self.line_len(py, size_limit(size));
        self.take(py, n)
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = size_limit(hint);
        let lines = PyList::empty(py);
        let mut total = 0usize;
        while self.remaining(py) > 0 && (hint == 0 || total < hint) {
            let n = self.line_len(py, usize::MAX);
            total += n;
            lines.append(self.take(py, n))?;
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        if self.remaining(py) == 0 {
            return None;
        }
        let n = self.line_len(py, usize::MAX);
        Some(self.take(py, n))
    }
}
