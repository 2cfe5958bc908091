// The book's own script (Jupyter Book loads every .js file of _static/).
// Wide tables never run past the article: a table with no horizontally
// scrolling box around it gets one, and a box whose table is wider than the
// page is marked (uslib-overflows: a scrollbar always drawn, a shadow) with a
// one-line hint above it. Styles: _static/uslib-book.css.
//
// Search: opened from file:// the browser refuses the requests Sphinx makes
// for each hit's summary (one CORS error per hit), so there the summaries are
// switched off; the search page names the one-line local server
// (`python -m uslib serve`) with which search shows them.
(function () {
  "use strict";

  // documentation_options.js declares it with `const`: a global binding, not a property of window
  if (window.location.protocol === "file:" && typeof DOCUMENTATION_OPTIONS !== "undefined") {
    DOCUMENTATION_OPTIONS.SHOW_SEARCH_SUMMARY = false;
  }

  function serveHint() {
    const form = document.querySelector("#search-results, .bd-search-container, form.bd-search");
    const isSearch = /(^|\/)search\.html$/.test(window.location.pathname);
    if (!isSearch || document.querySelector(".uslib-serve-hint")) return;
    const article = document.querySelector("article.bd-article") || document.querySelector("main");
    if (!article) return;
    const hint = document.createElement("p");
    hint.className = "uslib-serve-hint";
    hint.innerHTML = "Search works best with the book served locally: run " +
      "<code>python -m uslib serve</code> in the repository and open the address it prints " +
      "(opened as a file, results show titles only).";
    article.insertBefore(hint, (form && article.contains(form)) ? form : article.firstChild);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", serveHint);
  } else {
    serveHint();
  }
})();

(function () {
  "use strict";

  function scrollingBox(el, stop) {
    for (let a = el.parentElement; a && a !== stop; a = a.parentElement) {
      const ox = window.getComputedStyle(a).overflowX;
      if (ox === "auto" || ox === "scroll") return a;
    }
    return null;
  }

  function fitTables() {
    const article = document.querySelector("article.bd-article") || document.querySelector("main");
    if (!article) return;
    article.querySelectorAll("table").forEach(function (table) {
      let box = scrollingBox(table, article);
      if (!box) {
        box = document.createElement("div");
        box.className = "uslib-table-scroll";
        table.parentNode.insertBefore(box, table);
        box.appendChild(table);
      }
      const overflows = box.scrollWidth > box.clientWidth + 4;  // a border or a rounding is no hidden column
      box.classList.toggle("uslib-overflows", overflows);
      const before = box.previousElementSibling;
      const hinted = before && before.classList.contains("uslib-scroll-hint");
      if (overflows && !hinted) {
        const hint = document.createElement("p");
        hint.className = "uslib-scroll-hint";
        hint.textContent = "\u2194 This table is wider than the page: scroll it sideways to see every column.";
        box.parentNode.insertBefore(hint, box);
      } else if (!overflows && hinted) {
        before.remove();
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", fitTables);
  } else {
    fitTables();
  }
  window.addEventListener("load", fitTables);
  window.addEventListener("resize", fitTables);
})();
