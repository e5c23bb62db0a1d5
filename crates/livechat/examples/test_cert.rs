//! Writes a self-signed certificate for `localhost` and 127.0.0.1 (`cert.pem`, `key.pem`) into the
//! directory given, for tests that serve TLS. Not part of the product. Usage: `test_cert DIR`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: test_cert DIR")?;
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    let dir = std::path::Path::new(&dir);
    std::fs::write(dir.join("cert.pem"), made.cert.pem())?;
    std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem())?;
    Ok(())
}
