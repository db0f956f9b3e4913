//! Thumbnails with the `image` crate: the spec's standard sizes, scale or crop, with limits
//! on what a (possibly hostile) source image may cost to decode.

use std::io::Cursor;

use image::{imageops::FilterType, DynamicImage, ImageFormat, ImageReader};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Crop,
    Scale,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Crop => "crop",
            Method::Scale => "scale",
        }
    }
}

/// The sizes thumbnails are made in (Synapse's defaults, after the spec's examples).
const PRESETS: &[(u32, u32, Method)] = &[
    (32, 32, Method::Crop),
    (96, 96, Method::Crop),
    (320, 240, Method::Scale),
    (640, 480, Method::Scale),
    (800, 600, Method::Scale),
];

/// The smallest standard size of the method at least as large as asked, else the largest.
pub fn preset_for(width: u32, height: u32, method: Method) -> (u32, u32, Method) {
    let of_method: Vec<_> = PRESETS.iter().copied().filter(|(_, _, m)| *m == method).collect();
    of_method
        .iter()
        .copied()
        .find(|(w, h, _)| *w >= width && *h >= height)
        .unwrap_or_else(|| *of_method.last().expect("presets exist"))
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_pixels: u64,
}

pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

/// Decodes (within limits), resizes and encodes. Errors are messages for the client.
pub fn make(source: &[u8], width: u32, height: u32, method: Method, limits: Limits) -> Result<Thumbnail, String> {
    let reader = ImageReader::new(Cursor::new(source)).with_guessed_format().map_err(|_| "Unreadable image".to_owned())?;
    let format = reader.format().ok_or_else(|| "Cannot thumbnail this kind of media".to_owned())?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP) {
        return Err("Cannot thumbnail this kind of media".into());
    }
    let (w, h) = reader.into_dimensions().map_err(|_| "Unreadable image".to_owned())?;
    if u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err("The image has too many pixels to thumbnail".into());
    }
    let mut reader = ImageReader::new(Cursor::new(source)).with_guessed_format().map_err(|_| "Unreadable image".to_owned())?;
    let mut decode_limits = image::Limits::default();
    decode_limits.max_image_width = Some(w);
    decode_limits.max_image_height = Some(h);
    decode_limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(decode_limits);
    let image = reader.decode().map_err(|e| format!("Broken image: {e}"))?;
    let resized = resize(&image, width, height, method);
    let (output, content_type) = if format == ImageFormat::Jpeg { (ImageFormat::Jpeg, "image/jpeg") } else { (ImageFormat::Png, "image/png") };
    let mut bytes = Vec::new();
    let to_encode = if output == ImageFormat::Jpeg { DynamicImage::ImageRgb8(resized.to_rgb8()) } else { resized };
    to_encode.write_to(&mut Cursor::new(&mut bytes), output).map_err(|e| format!("Encoding failed: {e}"))?;
    Ok(Thumbnail { bytes, content_type })
}

/// Crop fills the box exactly (centre crop); scale fits inside it keeping the aspect ratio.
/// Neither enlarges a smaller image.
fn resize(image: &DynamicImage, width: u32, height: u32, method: Method) -> DynamicImage {
    let (w, h) = (image.width(), image.height());
    match method {
        Method::Crop => {
            let (tw, th) = (width.min(w), height.min(h));
            image.resize_to_fill(tw, th, FilterType::Triangle)
        }
        Method::Scale => {
            if w <= width && h <= height {
                image.clone()
            } else {
                image.resize(width, height, FilterType::Triangle)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_round_up_within_a_method() {
        assert_eq!(preset_for(30, 30, Method::Crop), (32, 32, Method::Crop));
        assert_eq!(preset_for(50, 50, Method::Crop), (96, 96, Method::Crop));
        assert_eq!(preset_for(2000, 2000, Method::Crop), (96, 96, Method::Crop));
        assert_eq!(preset_for(300, 200, Method::Scale), (320, 240, Method::Scale));
        assert_eq!(preset_for(700, 500, Method::Scale), (800, 600, Method::Scale));
    }

    #[test]
    fn hostile_inputs_are_errors_not_crashes() {
        let limits = Limits { max_pixels: 1_000_000 };
        assert!(make(b"not an image at all", 32, 32, Method::Crop, limits).is_err());
        // A PNG header claiming a huge size, with no data.
        let mut fake = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, b'I', b'H', b'D', b'R'];
        fake.extend_from_slice(&100_000u32.to_be_bytes());
        fake.extend_from_slice(&100_000u32.to_be_bytes());
        fake.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        assert!(make(&fake, 32, 32, Method::Crop, limits).is_err());
        // Truncated real image.
        let mut png = Vec::new();
        DynamicImage::new_rgb8(64, 64).write_to(&mut Cursor::new(&mut png), ImageFormat::Png).unwrap();
        assert!(make(&png[..png.len() / 2], 32, 32, Method::Crop, limits).is_err());
    }
}
