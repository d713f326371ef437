// Sign an approval in the browser: the console gave the exact bytes (data-message, base64); the person's
// Ed25519 key (PKCS#8 PEM) is read from the file they choose, used by WebCrypto, and never sent anywhere.
// Only the 64-byte signature goes back to the console, in the form's "signature" field.
"use strict";

const form = document.getElementById("sign-form");
const shown = document.getElementById("sign-error");

function fail(message) {
  shown.textContent = message;
  shown.hidden = false;
}

function pkcs8(pem) {
  const body = pem.replace(/-----(BEGIN|END) PRIVATE KEY-----/g, "").replace(/\s+/g, "");
  return Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
}

function base64(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes)));
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = document.getElementById("key-file").files[0];
  if (!file) {
    fail(form.dataset.noKey);
    return;
  }
  try {
    const key = await crypto.subtle.importKey("pkcs8", pkcs8(await file.text()), { name: "Ed25519" }, false,
                                              ["sign"]);
    const message = Uint8Array.from(atob(form.dataset.message), (c) => c.charCodeAt(0));
    document.getElementById("signature").value = base64(await crypto.subtle.sign({ name: "Ed25519" }, key, message));
  } catch (error) {
    fail(form.dataset.badKey);
    return;
  }
  form.submit();
});
