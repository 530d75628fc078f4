//! Stand-in for the standard library when rust-src is not installed: the core traits and
//! enums most `impl Trait for T` and `match` sites involve, with their real signatures
//! (Rust 1.8x `core`/`alloc`/`std`), bodies elided. Module paths follow `std::`.

pub mod fmt {
    /// The type returned by formatter methods.
    pub type Result = result::Result<(), Error>;

    /// The error type which is returned from formatting a message into a stream.
    pub struct Error;

    /// Configuration for formatting.
    pub struct Formatter<'a> {}

    impl<'a> Formatter<'a> {
        pub fn write_str(&mut self, data: &str) -> Result {}
        pub fn write_fmt(&mut self, fmt: Arguments<'_>) -> Result {}
        pub fn pad(&mut self, s: &str) -> Result {}
        pub fn alternate(&self) -> bool {}
        pub fn width(&self) -> Option<usize> {}
        pub fn precision(&self) -> Option<usize> {}
        pub fn debug_struct<'b>(&'b mut self, name: &str) -> DebugStruct<'b, 'a> {}
        pub fn debug_tuple<'b>(&'b mut self, name: &str) -> DebugTuple<'b, 'a> {}
        pub fn debug_list<'b>(&'b mut self) -> DebugList<'b, 'a> {}
        pub fn debug_map<'b>(&'b mut self) -> DebugMap<'b, 'a> {}
    }

    /// Format trait for an empty format, `{}`.
    pub trait Display {
        /// Formats the value using the given formatter.
        fn fmt(&self, f: &mut Formatter<'_>) -> Result;
    }

    /// `?` formatting.
    pub trait Debug {
        /// Formats the value using the given formatter.
        fn fmt(&self, f: &mut Formatter<'_>) -> Result;
    }

    /// A trait for writing or formatting into Unicode-accepting buffers or streams.
    pub trait Write {
        fn write_str(&mut self, s: &str) -> Result;
        fn write_char(&mut self, c: char) -> Result {}
        fn write_fmt(&mut self, args: Arguments<'_>) -> Result {}
    }
}

pub mod clone {
    /// A common trait for the ability to explicitly duplicate an object.
    pub trait Clone: Sized {
        fn clone(&self) -> Self;
        fn clone_from(&mut self, source: &Self) {}
    }
}

pub mod marker {
    /// Types whose values can be duplicated simply by copying bits.
    pub trait Copy: Clone {}
    /// Types that can be transferred across thread boundaries (an auto trait).
    pub unsafe trait Send {}
    /// Types for which it is safe to share references between threads (an auto trait).
    pub unsafe trait Sync {}
    /// Types with a constant size known at compile time.
    pub trait Sized {}
    /// Types that do not need to be pinned (an auto trait).
    pub trait Unpin {}
    /// Zero-sized type used to mark things that "act like" they own a `T`.
    pub struct PhantomData<T: ?Sized>;
}

pub mod default {
    /// A trait for giving a type a useful default value.
    pub trait Default: Sized {
        /// Returns the "default value" for a type.
        fn default() -> Self;
    }
}

pub mod convert {
    /// Used to do value-to-value conversions while consuming the input value.
    pub trait From<T>: Sized {
        fn from(value: T) -> Self;
    }

    /// A value-to-value conversion that consumes the input value; the opposite of `From`.
    pub trait Into<T>: Sized {
        fn into(self) -> T;
    }

    /// Simple and safe type conversions that may fail in a controlled way.
    pub trait TryFrom<T>: Sized {
        type Error;
        fn try_from(value: T) -> Result<Self, Self::Error>;
    }

    /// An attempted conversion that consumes `self`.
    pub trait TryInto<T>: Sized {
        type Error;
        fn try_into(self) -> Result<T, Self::Error>;
    }

    /// Used to do a cheap reference-to-reference conversion.
    pub trait AsRef<T: ?Sized> {
        fn as_ref(&self) -> &T;
    }

    /// Used to do a cheap mutable-to-mutable reference conversion.
    pub trait AsMut<T: ?Sized> {
        fn as_mut(&mut self) -> &mut T;
    }

    /// The error type for errors that can never happen.
    pub enum Infallible {}
}

pub mod cmp {
    /// Equality comparisons which are partial equivalence relations.
    pub trait PartialEq<Rhs: ?Sized = Self> {
        fn eq(&self, other: &Rhs) -> bool;
        fn ne(&self, other: &Rhs) -> bool {}
    }

    /// Equality comparisons which are equivalence relations.
    pub trait Eq: PartialEq<Self> {}

    /// An `Ordering` is the result of a comparison between two values.
    pub enum Ordering {
        Less = -1,
        Equal = 0,
        Greater = 1,
    }

    /// Values that can be compared for a sort-order.
    pub trait PartialOrd<Rhs: ?Sized = Self>: PartialEq<Rhs> {
        fn partial_cmp(&self, other: &Rhs) -> Option<Ordering>;
        fn lt(&self, other: &Rhs) -> bool {}
        fn le(&self, other: &Rhs) -> bool {}
        fn gt(&self, other: &Rhs) -> bool {}
        fn ge(&self, other: &Rhs) -> bool {}
    }

    /// Trait for types that form a total order.
    pub trait Ord: Eq + PartialOrd<Self> {
        fn cmp(&self, other: &Self) -> Ordering;
        fn max(self, other: Self) -> Self where Self: Sized {}
        fn min(self, other: Self) -> Self where Self: Sized {}
        fn clamp(self, min: Self, max: Self) -> Self where Self: Sized {}
    }
}

pub mod hash {
    /// A hashable type.
    pub trait Hash {
        fn hash<H: Hasher>(&self, state: &mut H);
    }

    /// A trait for hashing an arbitrary stream of bytes.
    pub trait Hasher {
        fn finish(&self) -> u64;
        fn write(&mut self, bytes: &[u8]);
    }
}

pub mod ops {
    /// Custom code within the destructor.
    pub trait Drop {
        fn drop(&mut self);
    }

    /// Used for immutable dereferencing operations, like `*v`.
    pub trait Deref {
        type Target: ?Sized;
        fn deref(&self) -> &Self::Target;
    }

    /// Used for mutable dereferencing operations, like in `*v = 1;`.
    pub trait DerefMut: Deref {
        fn deref_mut(&mut self) -> &mut Self::Target;
    }

    /// The addition operator `+`.
    pub trait Add<Rhs = Self> {
        type Output;
        fn add(self, rhs: Rhs) -> Self::Output;
    }

    /// The subtraction operator `-`.
    pub trait Sub<Rhs = Self> {
        type Output;
        fn sub(self, rhs: Rhs) -> Self::Output;
    }

    /// The multiplication operator `*`.
    pub trait Mul<Rhs = Self> {
        type Output;
        fn mul(self, rhs: Rhs) -> Self::Output;
    }

    /// The division operator `/`.
    pub trait Div<Rhs = Self> {
        type Output;
        fn div(self, rhs: Rhs) -> Self::Output;
    }

    /// The remainder operator `%`.
    pub trait Rem<Rhs = Self> {
        type Output;
        fn rem(self, rhs: Rhs) -> Self::Output;
    }

    /// The unary negation operator `-`.
    pub trait Neg {
        type Output;
        fn neg(self) -> Self::Output;
    }

    /// The unary logical negation operator `!`.
    pub trait Not {
        type Output;
        fn not(self) -> Self::Output;
    }

    /// The addition assignment operator `+=`.
    pub trait AddAssign<Rhs = Self> {
        fn add_assign(&mut self, rhs: Rhs);
    }

    /// The subtraction assignment operator `-=`.
    pub trait SubAssign<Rhs = Self> {
        fn sub_assign(&mut self, rhs: Rhs);
    }

    /// The multiplication assignment operator `*=`.
    pub trait MulAssign<Rhs = Self> {
        fn mul_assign(&mut self, rhs: Rhs);
    }

    /// The division assignment operator `/=`.
    pub trait DivAssign<Rhs = Self> {
        fn div_assign(&mut self, rhs: Rhs);
    }

    /// Used for indexing operations (`container[index]`) in immutable contexts.
    pub trait Index<Idx: ?Sized> {
        type Output: ?Sized;
        fn index(&self, index: Idx) -> &Self::Output;
    }

    /// Used for indexing operations (`container[index]`) in mutable contexts.
    pub trait IndexMut<Idx: ?Sized>: Index<Idx> {
        fn index_mut(&mut self, index: Idx) -> &mut Self::Output;
    }

    /// The version of the call operator that takes a by-value receiver.
    pub trait FnOnce<Args> {
        type Output;
        extern "rust-call" fn call_once(self, args: Args) -> Self::Output;
    }

    /// The version of the call operator that takes a mutable receiver.
    pub trait FnMut<Args>: FnOnce<Args> {
        extern "rust-call" fn call_mut(&mut self, args: Args) -> Self::Output;
    }

    /// The version of the call operator that takes an immutable receiver.
    pub trait Fn<Args>: FnMut<Args> {
        extern "rust-call" fn call(&self, args: Args) -> Self::Output;
    }

    /// Used to tell an operator whether it should exit early or go on as usual.
    pub enum ControlFlow<B, C = ()> {
        Continue(C),
        Break(B),
    }
}

pub mod option {
    /// The `Option` type.
    pub enum Option<T> {
        /// No value.
        None,
        /// Some value of type `T`.
        Some(T),
    }

    impl<T> Option<T> {
        pub const fn is_some(&self) -> bool {}
        pub const fn is_none(&self) -> bool {}
        pub const fn as_ref(&self) -> Option<&T> {}
        pub fn as_mut(&mut self) -> Option<&mut T> {}
        pub fn expect(self, msg: &str) -> T {}
        pub fn unwrap(self) -> T {}
        pub fn unwrap_or(self, default: T) -> T {}
        pub fn unwrap_or_else<F: FnOnce() -> T>(self, f: F) -> T {}
        pub fn unwrap_or_default(self) -> T where T: Default {}
        pub fn map<U, F: FnOnce(T) -> U>(self, f: F) -> Option<U> {}
        pub fn ok_or<E>(self, err: E) -> Result<T, E> {}
        pub fn ok_or_else<E, F: FnOnce() -> E>(self, err: F) -> Result<T, E> {}
        pub fn and_then<U, F: FnOnce(T) -> Option<U>>(self, f: F) -> Option<U> {}
        pub fn filter<P: FnOnce(&T) -> bool>(self, predicate: P) -> Self {}
        pub fn or(self, optb: Option<T>) -> Option<T> {}
        pub fn take(&mut self) -> Option<T> {}
        pub fn replace(&mut self, value: T) -> Option<T> {}
    }
}

pub mod result {
    /// `Result` is a type that represents either success (`Ok`) or failure (`Err`).
    pub enum Result<T, E> {
        /// Contains the success value.
        Ok(T),
        /// Contains the error value.
        Err(E),
    }

    impl<T, E> Result<T, E> {
        pub const fn is_ok(&self) -> bool {}
        pub const fn is_err(&self) -> bool {}
        pub fn ok(self) -> Option<T> {}
        pub fn err(self) -> Option<E> {}
        pub const fn as_ref(&self) -> Result<&T, &E> {}
        pub fn map<U, F: FnOnce(T) -> U>(self, op: F) -> Result<U, E> {}
        pub fn map_err<F, O: FnOnce(E) -> F>(self, op: O) -> Result<T, F> {}
        pub fn and_then<U, F: FnOnce(T) -> Result<U, E>>(self, op: F) -> Result<U, E> {}
        pub fn expect(self, msg: &str) -> T where E: fmt::Debug {}
        pub fn unwrap(self) -> T where E: fmt::Debug {}
        pub fn unwrap_or(self, default: T) -> T {}
        pub fn unwrap_or_else<F: FnOnce(E) -> T>(self, op: F) -> T {}
        pub fn unwrap_or_default(self) -> T where T: Default {}
    }
}

pub mod iter {
    /// A trait for dealing with iterators.
    pub trait Iterator {
        /// The type of the elements being iterated over.
        type Item;
        /// Advances the iterator and returns the next value.
        fn next(&mut self) -> Option<Self::Item>;
        fn size_hint(&self) -> (usize, Option<usize>) {}
        fn count(self) -> usize where Self: Sized {}
        fn last(self) -> Option<Self::Item> where Self: Sized {}
        fn nth(&mut self, n: usize) -> Option<Self::Item> {}
        fn map<B, F>(self, f: F) -> Map<Self, F> where Self: Sized, F: FnMut(Self::Item) -> B {}
        fn filter<P>(self, predicate: P) -> Filter<Self, P> where Self: Sized, P: FnMut(&Self::Item) -> bool {}
        fn filter_map<B, F>(self, f: F) -> FilterMap<Self, F> where Self: Sized, F: FnMut(Self::Item) -> Option<B> {}
        fn enumerate(self) -> Enumerate<Self> where Self: Sized {}
        fn zip<U>(self, other: U) -> Zip<Self, U::IntoIter> where Self: Sized, U: IntoIterator {}
        fn chain<U>(self, other: U) -> Chain<Self, U::IntoIter> where Self: Sized, U: IntoIterator<Item = Self::Item> {}
        fn take(self, n: usize) -> Take<Self> where Self: Sized {}
        fn skip(self, n: usize) -> Skip<Self> where Self: Sized {}
        fn peekable(self) -> Peekable<Self> where Self: Sized {}
        fn flat_map<U, F>(self, f: F) -> FlatMap<Self, U, F> where Self: Sized, U: IntoIterator, F: FnMut(Self::Item) -> U {}
        fn for_each<F>(self, f: F) where Self: Sized, F: FnMut(Self::Item) {}
        fn collect<B: FromIterator<Self::Item>>(self) -> B where Self: Sized {}
        fn fold<B, F>(self, init: B, f: F) -> B where Self: Sized, F: FnMut(B, Self::Item) -> B {}
        fn any<F>(&mut self, f: F) -> bool where Self: Sized, F: FnMut(Self::Item) -> bool {}
        fn all<F>(&mut self, f: F) -> bool where Self: Sized, F: FnMut(Self::Item) -> bool {}
        fn find<P>(&mut self, predicate: P) -> Option<Self::Item> where Self: Sized, P: FnMut(&Self::Item) -> bool {}
        fn position<P>(&mut self, predicate: P) -> Option<usize> where Self: Sized, P: FnMut(Self::Item) -> bool {}
        fn max(self) -> Option<Self::Item> where Self: Sized, Self::Item: Ord {}
        fn min(self) -> Option<Self::Item> where Self: Sized, Self::Item: Ord {}
        fn sum<S>(self) -> S where Self: Sized, S: Sum<Self::Item> {}
        fn rev(self) -> Rev<Self> where Self: Sized + DoubleEndedIterator {}
        fn cloned<'a, T>(self) -> Cloned<Self> where T: 'a + Clone, Self: Sized + Iterator<Item = &'a T> {}
    }

    /// Conversion into an `Iterator`.
    pub trait IntoIterator {
        type Item;
        type IntoIter: Iterator<Item = Self::Item>;
        fn into_iter(self) -> Self::IntoIter;
    }

    /// Conversion from an `Iterator`.
    pub trait FromIterator<A>: Sized {
        fn from_iter<T: IntoIterator<Item = A>>(iter: T) -> Self;
    }

    /// Extend a collection with the contents of an iterator.
    pub trait Extend<A> {
        fn extend<T: IntoIterator<Item = A>>(&mut self, iter: T);
    }

    /// An iterator able to yield elements from both ends.
    pub trait DoubleEndedIterator: Iterator {
        fn next_back(&mut self) -> Option<Self::Item>;
    }

    /// An iterator that knows its exact length.
    pub trait ExactSizeIterator: Iterator {
        fn len(&self) -> usize {}
    }
}

pub mod str {
    /// Parse a value from a string.
    pub trait FromStr: Sized {
        /// The associated error which can be returned from parsing.
        type Err;
        fn from_str(s: &str) -> Result<Self, Self::Err>;
    }
}

pub mod string {
    /// A trait for converting a value to a `String`.
    pub trait ToString {
        fn to_string(&self) -> String;
    }

    /// A UTF-8–encoded, growable string.
    pub struct String {}
}

pub mod borrow {
    /// A trait for borrowing data.
    pub trait Borrow<Borrowed: ?Sized> {
        fn borrow(&self) -> &Borrowed;
    }

    /// A generalization of `Clone` to borrowed data.
    pub trait ToOwned {
        type Owned: Borrow<Self>;
        fn to_owned(&self) -> Self::Owned;
    }

    /// A clone-on-write smart pointer.
    pub enum Cow<'a, B: ?Sized + 'a>
    where
        B: ToOwned,
    {
        Borrowed(&'a B),
        Owned(<B as ToOwned>::Owned),
    }
}

pub mod error {
    /// `Error` is a trait representing the basic expectations for error values.
    pub trait Error: Debug + Display {
        fn source(&self) -> Option<&(dyn Error + 'static)> {}
        fn description(&self) -> &str {}
    }
}

pub mod io {
    /// The `Read` trait allows for reading bytes from a source.
    pub trait Read {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize>;
        fn read_to_end(&mut self, buf: &mut Vec<u8>) -> Result<usize> {}
        fn read_to_string(&mut self, buf: &mut String) -> Result<usize> {}
    }

    /// A trait for objects which are byte-oriented sinks.
    pub trait Write {
        fn write(&mut self, buf: &[u8]) -> Result<usize>;
        fn flush(&mut self) -> Result<()>;
        fn write_all(&mut self, buf: &[u8]) -> Result<()> {}
    }

    /// A specialized `Result` type for I/O operations.
    pub type Result<T> = result::Result<T, Error>;

    /// The error type for I/O operations.
    pub struct Error {}

    /// A list specifying general categories of I/O error.
    pub enum ErrorKind {
        NotFound,
        PermissionDenied,
        AlreadyExists,
        InvalidInput,
        InvalidData,
        UnexpectedEof,
        Other,
    }
}
