/* propstream: page views, add-to-cart and purchases to the propstream collector.
 *
 *   <script src="https://collector.example.com/propstream.js"></script>
 *   <script>
 *     propstream.init({ user: "customer-42" });        // the shop's customer id (else an anonymous one is kept)
 *     propstream.view("item-1");                       // on a product page
 *     propstream.cart("item-1", { quantity: 1, value: 2.49 });
 *     propstream.purchase("item-1", { quantity: 2, value: 4.98 });
 *   </script>
 *
 * Events are batched (up to maxBatch, or flushMs after the first) and sent
 * with navigator.sendBeacon as one JSON array to <endpoint>/events, and at
 * once when the page is hidden or left. When the browser refuses the beacon
 * (none, or its queue is full), each event goes as a 1x1 pixel
 * (<endpoint>/pixel.gif?...) instead. Every event gets its id and timestamp
 * here, once, so a copy sent twice is applied once by the stream.
 *
 * Options of init: endpoint (default: where this script was loaded from),
 * user, transport ("beacon" or "pixel"), flushMs (1000), maxBatch (20).
 */
(function (window, document) {
  "use strict";
  if (window.propstream && window.propstream.version) return;

  var script = document.currentScript;
  var config = {
    endpoint: script && script.src ? new URL(script.src, document.baseURI).origin : "",
    user: null,
    transport: "beacon",
    flushMs: 1000,
    maxBatch: 20
  };
  var queue = [];
  var timer = null;
  var loading = []; // pixels in flight, kept referenced until they load

  function randomId() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    var s = "";
    for (var i = 0; i < 4; i++) s += Math.floor(Math.random() * 0x100000000).toString(16);
    return s + Date.now().toString(16);
  }

  function anonymousUser() {
    var key = "propstream.anonymous_id";
    try {
      var id = window.localStorage.getItem(key);
      if (!id) {
        id = "anon:" + randomId();
        window.localStorage.setItem(key, id);
      }
      return id;
    } catch (e) {
      return "anon:" + randomId(); // storage blocked: one id for this page
    }
  }

  function init(options) {
    options = options || {};
    for (var k in options) {
      if (Object.prototype.hasOwnProperty.call(options, k) && options[k] !== undefined) config[k] = options[k];
    }
    config.endpoint = String(config.endpoint).replace(/\/+$/, "");
    return api;
  }

  function track(type, item, details) {
    details = details || {};
    queue.push({
      event_id: "js:" + randomId(),
      user_id: String(config.user || anonymousUser()),
      item_id: String(item),
      type: type,
      timestamp: Date.now(),
      quantity: details.quantity === undefined ? 1 : Number(details.quantity),
      value: details.value === undefined ? 0 : Number(details.value)
    });
    if (queue.length >= config.maxBatch) flush();
    else if (timer === null) timer = window.setTimeout(flush, config.flushMs);
  }

  function pixel(event) {
    var query = [];
    for (var k in event) query.push(encodeURIComponent(k) + "=" + encodeURIComponent(event[k]));
    var img = new Image(1, 1);
    img.onload = img.onerror = function () { loading.splice(loading.indexOf(img), 1); };
    loading.push(img);
    img.src = config.endpoint + "/pixel.gif?" + query.join("&");
  }

  function flush() {
    if (timer !== null) {
      window.clearTimeout(timer);
      timer = null;
    }
    if (!queue.length) return;
    var batch = queue.splice(0, queue.length);
    var sent = false;
    if (config.transport === "beacon" && navigator.sendBeacon) {
      try {
        // A string body is sent as text/plain: a CORS-safelisted type, so no preflight.
        sent = navigator.sendBeacon(config.endpoint + "/events", JSON.stringify(batch));
      } catch (e) {
        sent = false;
      }
    }
    if (!sent) batch.forEach(pixel);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") flush();
  });
  window.addEventListener("pagehide", flush);

  var api = {
    version: "1",
    init: init,
    view: function (item, details) { track("view", item, details); },
    cart: function (item, details) { track("cart", item, details); },
    purchase: function (item, details) { track("purchase", item, details); },
    flush: flush
  };
  window.propstream = api;
})(window, document);
