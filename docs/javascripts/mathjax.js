// MathJax configuration for pymdownx.arithmatex (generic mode: \( \) and \[ \] in span/div
// elements of class "arithmatex"). MathJax itself ships with the site, in javascripts/mathjax/
// (MathJax 3.2.2, tex-chtml-full.js, Apache-2.0): fonts load from there too, nothing from another
// host, so formulas render offline.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex"
  }
};

// MathJax typesets the first page by itself once it is ready. With instant navigation, a page's
// content is later replaced without a reload, and document$ emits again: typeset that content.
// (Clearing MathJax's cache on the first emission, while its own first typeset runs, would
// leave every glyph blank.)
if (typeof document$ !== "undefined") {
  let first = true;
  document$.subscribe(() => {
    const mj = window.MathJax;
    if (first || !mj || !mj.startup || !mj.startup.output || !mj.typesetPromise) {
      first = false;
      return;
    }
    mj.startup.output.clearCache();
    mj.typesetClear();
    mj.texReset();
    mj.typesetPromise();
  });
}
