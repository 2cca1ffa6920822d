// Copy the browser files rnnscope serves from node_modules into static/vendor/ (gitignored).
// Runs as npm's postinstall, so `npm ci` leaves the app ready to serve with nothing from a CDN.
// axe-core is a devDependency (the accessibility test injects it into each page): it is copied when it
// is installed and skipped, with a note, under `npm ci --omit=dev`.
const fs = require("fs");
const path = require("path");

const root = path.resolve(__dirname, "..");
const dest = path.join(root, "static", "vendor");
const files = [
  ["htmx.org/dist/htmx.min.js", "htmx.min.js"],
  ["swagger-ui-dist/swagger-ui-bundle.js", "swagger-ui-bundle.js"],
  ["swagger-ui-dist/swagger-ui.css", "swagger-ui.css"],
];
const devFiles = [
  ["axe-core/axe.min.js", "axe.min.js"],
];

fs.mkdirSync(dest, { recursive: true });
for (const [from, to] of files) {
  const src = path.join(root, "node_modules", from);
  fs.copyFileSync(src, path.join(dest, to));
  console.log(`copied ${from} -> static/vendor/${to}`);
}
for (const [from, to] of devFiles) {
  const src = path.join(root, "node_modules", from);
  if (!fs.existsSync(src)) {
    console.log(`skipped ${from}: a devDependency that is not installed (only the tests use it)`);
    continue;
  }
  fs.copyFileSync(src, path.join(dest, to));
  console.log(`copied ${from} -> static/vendor/${to}`);
}
