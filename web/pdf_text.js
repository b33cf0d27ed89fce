/*
 * pdf_text.js: the text of a PDF, for attachments.js. Mozilla's pdf.js (npm pdfjs-dist, pinned in package.json
 * and vendored by build/build_site.py) is an ES module: it is imported when the first PDF is attached, and it
 * parses the file in its own module worker (vendor/pdf.worker.min.mjs), both from 'self' as the page's CSP
 * wants; isEvalSupported: false keeps it from compiling font code with new Function (the CSP forbids eval).
 *
 *     const text = await Pychat.pdfText(await file.arrayBuffer());   // the pages' text, a blank line between pages
 */
(function (Pychat) {
  "use strict";

  const LIBRARY = "vendor/pdf.min.mjs";
  const WORKER = "vendor/pdf.worker.min.mjs";
  let library = null;  // the import of pdf.js, once

  function pdfjs() {
    library = library || import(new URL(LIBRARY, document.baseURI).href).then((module) => {
      module.GlobalWorkerOptions.workerSrc = new URL(WORKER, document.baseURI).href;
      return module;
    });
    return library;
  }

  /* A page's text items in reading order as pdf.js gives them; hasEOL marks where a line ends. */
  function pageText(content) {
    return content.items.map((item) => (item.str || "") + (item.hasEOL ? "\n" : "")).join("").trim();
  }

  async function pdfText(bytes) {
    const {getDocument} = await pdfjs();
    const task = getDocument({data: new Uint8Array(bytes), isEvalSupported: false, disableFontFace: true,
                              stopAtErrors: true});
    const pdf = await task.promise;
    try {
      const pages = [];
      for (let number = 1; number <= pdf.numPages; number++) {
        const page = await pdf.getPage(number);
        pages.push(pageText(await page.getTextContent()));
        page.cleanup();
      }
      return pages.filter(Boolean).join("\n\n");
    } finally {
      await task.destroy();
    }
  }

  Object.assign(Pychat, {pdfText});
})(self.Pychat = self.Pychat || {});
