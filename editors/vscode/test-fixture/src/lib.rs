//! The npm test's fixture: a line with CJK and emoji before the cursor. 形状 😀

pub fn area(w: f64, h: f64) -> f64 {
    let label = "面积😀"; let a = 
    w * h
}
