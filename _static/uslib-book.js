// The book's own script (Jupyter Book loads every .js file of _static/).
// Wide tables never run past the article: a table with no horizontally
// scrolling box around it gets one, and a box whose table is wider than the
// page is marked (uslib-overflows: a scrollbar always drawn, a shadow) with a
// one-line hint above it. Styles: _static/uslib-book.css.
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
