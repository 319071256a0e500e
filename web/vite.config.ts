import { defineConfig } from 'vitest/config';
import react from '@vitejs/plugin-react';

export default defineConfig({
  plugins: [react()],
  // Relative asset URLs: the same build is served at "/" and under the apiserver's service
  // proxy prefix (/api/v1/namespaces/.../proxy/), which the bundle cannot know in advance.
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // No source maps in the embedded build: they would double the size of the Go binary.
    sourcemap: false,
  },
  server: {
    // `npm run dev` against a locally running server (go run ./cmd/server).
    proxy: { '/api': 'http://localhost:8080' },
  },
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.{ts,tsx}'],
  },
});
