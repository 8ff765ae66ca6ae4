use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};
proxy_wasm::main! {{ proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(R) }); }}
struct R;
impl Context for R {}
impl RootContext for R {
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> { Some(Box::new(H)) }
    fn get_type(&self) -> Option<ContextType> { Some(ContextType::HttpContext) }
}
struct H;
impl Context for H {}
impl HttpContext for H {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let _p = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":path");
        let _c = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "cookie");
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-wam-user", Some("alice"));
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-wam-email", Some("alice@example.com"));
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-wam-groups", Some("staff"));
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "cookie", Some("theme=dark"));
        Action::Continue
    }
}
