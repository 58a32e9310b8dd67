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

// With instant navigation a page's content is replaced without a reload: typeset it again.
// On the first page load MathJax typesets by itself once it is ready, so until then (and if
// MathJax failed to load) there is nothing to do here.
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    const mj = window.MathJax;
    if (!mj || !mj.startup || !mj.startup.output || !mj.typesetPromise) return;
    mj.startup.output.clearCache();
    mj.typesetClear();
    mj.texReset();
    mj.typesetPromise();
  });
}
