// Builds the test page (index.html + page.js) with the Hydrogen SDK and its olm assets.
// The output directory comes from the command line (`vite build --outDir <temp dir>`), so
// nothing is written into the work tree; `dist/` is the fallback and is git-ignored.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// Hydrogen needs its service worker at the root of the page's origin (its README has it
// symlinked into vite's public dir): the client hands it the access token for authenticated
// media, and fails to load a session without it. Emitted as-is.
const root = fileURLToPath(new URL(".", import.meta.url));
const serviceWorker = {
    name: "hydrogen-service-worker",
    generateBundle() {
        // Not in the package's exports map, so read by path.
        const source = readFileSync(`${root}/node_modules/hydrogen-view-sdk/lib-build/sw.js`);
        this.emitFile({ type: "asset", fileName: "sw.js", source });
    },
};

export default defineConfig({
    root,
    publicDir: false,
    logLevel: "warn",
    plugins: [serviceWorker],
    build: {
        outDir: "dist",
        emptyOutDir: true,
        // Keep olm.wasm, olm.js and the worker as files: Hydrogen loads them by URL.
        assetsInlineLimit: 0,
        chunkSizeWarningLimit: 4096,
        sourcemap: false,
        minify: false,
    },
});
