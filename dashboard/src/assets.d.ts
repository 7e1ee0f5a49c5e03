// Stylesheets are imported for esbuild to bundle them into main.css.
declare module '*.css';
