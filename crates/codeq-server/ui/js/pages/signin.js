// js/pages/signin.js
