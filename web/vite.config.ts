import { defineConfig } from 'vite';

// The build goes straight into the Python package, so `pip install` needs no Node.
export default defineConfig({
  base: '/',
  build: {
    outDir: '../src/truthset/web_dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    chunkSizeWarningLimit: 4096,
    sourcemap: false,
    reportCompressedSize: false,
    target: 'es2022',
  },
  worker: { format: 'es' },
  optimizeDeps: {
    exclude: ['@cornerstonejs/dicom-image-loader'],
    include: ['dicom-parser'],
  },
  server: {
    proxy: {
      '/api': 'http://127.0.0.1:8000',
      '/dicomweb': 'http://127.0.0.1:8000',
    },
  },
});
