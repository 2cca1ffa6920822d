// Copy the browser files rnnscope serves from node_modules into static/vendor/ (gitignored).
// Runs as npm's postinstall, so `npm ci` leaves the app ready to serve with nothing from a CDN.
const fs = require("fs");
const path = require("path");

const root = path.resolve(__dirname, "..");
const dest = path.join(root, "static", "vendor");
const files = [
  ["htmx.org/dist/htmx.min.js", "htmx.min.js"],
  ["swagger-ui-dist/swagger-ui-bundle.js", "swagger-ui-bundle.js"],
  ["swagger-ui-dist/swagger-ui.css", "swagger-ui.css"],
];

fs.mkdirSync(dest, { recursive: true });
for (const [from, to] of files) {
  const src = path.join(root, "node_modules", from);
  fs.copyFileSync(src, path.join(dest, to));
  console.log(`copied ${from} -> static/vendor/${to}`);
}
